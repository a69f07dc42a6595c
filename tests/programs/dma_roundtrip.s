; The smallest useful program: copy 4 KiB from segment 0 to segment 1 through the scratchpad.
.seg src 0 size=4096 role=input
.seg dst 1 size=4096 role=output
.sem loaded 0
.dma block x_bytes=4096
dma.load  desc=block seg=src offset=0 dst=spad:0 signal=loaded
dma.store desc=block seg=dst offset=0 src=spad:0 wait=loaded
end code=0
