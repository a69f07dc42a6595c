; An f32 GEMM with the reduction split over two weight tiles: C[64x32] = A[64x64] x W[64x32].
; The second matmul accumulates onto the first; the result is stored straight from the
; accumulator.
.seg a 0 size=16384 role=input     ; A, 64 rows of 64 f32 (256 bytes per row)
.seg w 1 size=8192  role=const     ; W, 64 rows of 32 f32 (128 bytes per row)
.seg c 2 size=8192  role=output    ; C, 64 rows of 32 f32

.equ W  0x0000                     ; scratchpad: W at 0, A after it
.equ A  0x2000

.sem w_in  0
.sem a_in  1
.sem c_out 2

.dma w_all x_bytes=8192
.dma a_all x_bytes=16384
.dma c_all x_bytes=8192

dma.load desc=w_all seg=w offset=0 dst=spad:W signal=w_in
dma.load desc=a_all seg=a offset=0 dst=spad:A signal=a_in
mx.load_w src=spad:W k=32 n=32 stride=128 dtype=f32 wait=w_in
mx.matmul a=spad:A a_stride=256 c=acc:0 c_stride=128 rows=64 dtype=f32 accumulate=0 wait=a_in
mx.load_w src=spad:W+32*128 k=32 n=32 stride=128 dtype=f32
mx.matmul a=spad:A+32*4 a_stride=256 c=acc:0 c_stride=128 rows=64 dtype=f32 accumulate=1 signal=c_out
dma.store desc=c_all seg=c offset=0 src=acc:0 wait=c_out
end code=0
