"""An onnxruntime script, as users write them: run a model on an input file and save the
first output. ``test_dropin.py`` runs it as it is and with only its import line changed to
``import accelc as ort``."""

import sys

import numpy as np
import onnxruntime as ort

model, input_file, output_file = sys.argv[1:4]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
x = np.load(input_file)
assert inp.type == "tensor(float)", inp.type
assert list(inp.shape) == list(x.shape), (inp.shape, x.shape)
out_name = sess.get_outputs()[0].name
(y,) = sess.run([out_name], {inp.name: x})
everything = sess.run(None, {inp.name: x})
assert len(everything) == len(sess.get_outputs())
assert np.array_equal(everything[0], y)
np.save(output_file, y)
print(sess.get_modelmeta().producer_name, y.dtype, y.shape)
