"""Writes the ONNX backend node tests of the installed `onnx` package as files.

`backend-test-tools generate-data` in onnx 1.23 writes only the model tests, so this script
does the same for the node tests (`onnx.backend.test.case.node`), in the usual layout:
DIR/node/test_NAME/model.onnx and test_data_set_K/{input,output}_J.pb (TensorProto).
Inputs and outputs that are not tensors (sequences, maps, optionals) are skipped and the
case is marked with a file `non_tensor_io`, so the runner can say why it is out of scope.
"""

import os
import sys

import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case.node import collect_testcases


def tensor(value, name):
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(value, name)


def main(out_dir):
    cases = collect_testcases()
    for case in cases:
        case_dir = os.path.join(out_dir, "node", case.name)
        os.makedirs(case_dir, exist_ok=True)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        graph = case.model.graph
        non_tensor = False
        for k, (inputs, outputs) in enumerate(case.data_sets):
            set_dir = os.path.join(case_dir, f"test_data_set_{k}")
            os.makedirs(set_dir, exist_ok=True)
            for kind, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
                for j, value in enumerate(values):
                    if not infos[j].type.HasField("tensor_type"):
                        non_tensor = True
                        continue
                    with open(os.path.join(set_dir, f"{kind}_{j}.pb"), "wb") as f:
                        f.write(tensor(value, infos[j].name).SerializeToString())
        if non_tensor:
            open(os.path.join(case_dir, "non_tensor_io"), "w").close()
    with open(os.path.join(out_dir, "onnx_version"), "w") as f:
        f.write(onnx.__version__ + "\n")
    print(f"wrote {len(cases)} node tests to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
