; A double-buffered int8 GEMM over all four engines: C[128x32] = requant(A[128x32] x W[32x32]).
; LD loads four 32-row tiles of A into two scratchpad slots, MX multiplies each into one of two
; accumulator tiles, VX requantizes each into one of two output slots, ST stores them. Every
; producer/consumer pair is a full/free semaphore pair, so DMA overlaps compute.

.seg  a    0 size=4096 role=input   ; A, 128 rows of 32 int8
.seg  wts  1 size=1040 role=const   ; W (1024 bytes) then the requantization record (16 bytes)
.seg  c    2 size=4096 role=output  ; C, 128 rows of 32 int8

.equ  W       0x0000    ; scratchpad layout
.equ  PARAMS  0x0400
.equ  IN0     0x1000
.equ  IN1     0x1400
.equ  OUT0    0x2000
.equ  OUT1    0x2400
.equ  ACC0    0x0000    ; accumulator layout: 32 rows x 32 lanes x 4 bytes per tile
.equ  ACC1    0x1000
.equ  TILE    1024      ; 32 rows x 32 bytes

.sem  in_full   0
.sem  in_free   1 init=2
.sem  w_ready   2
.sem  p_ready   3
.sem  acc_full  4
.sem  acc_free  5 init=2
.sem  out_full  6
.sem  out_free  7 init=2

.dma   tile    x_bytes=TILE
.dma   params  x_bytes=16
.shape rq      cols=32 rows=32 dst_row=32 src0_row=128

dma.load desc=tile seg=wts offset=0 dst=spad:W signal=w_ready
dma.load desc=params seg=wts offset=TILE dst=spad:PARAMS signal=p_ready
mx.load_w src=spad:W k=32 n=32 stride=32 dtype=s8 wait=w_ready
nop queue=vx wait=p_ready

dma.load desc=tile seg=a offset=0*TILE dst=spad:IN0 wait=in_free signal=in_full
dma.load desc=tile seg=a offset=1*TILE dst=spad:IN1 wait=in_free signal=in_full

mx.matmul a=spad:IN0 a_stride=32 c=acc:ACC0 c_stride=128 rows=32 dtype=s8 accumulate=0 wait=in_full,acc_free signal=in_free,acc_full
vx.requant per_channel=0 bias=0 dtype=s8 shape=rq dst=spad:OUT0 src=acc:ACC0 params=spad:PARAMS wait=acc_full,out_free signal=acc_free,out_full
dma.store desc=tile seg=c offset=0*TILE src=spad:OUT0 wait=out_full signal=out_free
dma.load desc=tile seg=a offset=2*TILE dst=spad:IN0 wait=in_free signal=in_full

mx.matmul a=spad:IN1 a_stride=32 c=acc:ACC1 c_stride=128 rows=32 dtype=s8 accumulate=0 wait=in_full,acc_free signal=in_free,acc_full
vx.requant per_channel=0 bias=0 dtype=s8 shape=rq dst=spad:OUT1 src=acc:ACC1 params=spad:PARAMS wait=acc_full,out_free signal=acc_free,out_full
dma.store desc=tile seg=c offset=1*TILE src=spad:OUT1 wait=out_full signal=out_free
dma.load desc=tile seg=a offset=3*TILE dst=spad:IN1 wait=in_free signal=in_full

mx.matmul a=spad:IN0 a_stride=32 c=acc:ACC0 c_stride=128 rows=32 dtype=s8 accumulate=0 wait=in_full,acc_free signal=in_free,acc_full
vx.requant per_channel=0 bias=0 dtype=s8 shape=rq dst=spad:OUT0 src=acc:ACC0 params=spad:PARAMS wait=acc_full,out_free signal=acc_free,out_full
dma.store desc=tile seg=c offset=2*TILE src=spad:OUT0 wait=out_full signal=out_free

mx.matmul a=spad:IN1 a_stride=32 c=acc:ACC1 c_stride=128 rows=32 dtype=s8 accumulate=0 wait=in_full,acc_free signal=in_free,acc_full
vx.requant per_channel=0 bias=0 dtype=s8 shape=rq dst=spad:OUT1 src=acc:ACC1 params=spad:PARAMS wait=acc_full,out_free signal=acc_free,out_full
dma.store desc=tile seg=c offset=3*TILE src=spad:OUT1 wait=out_full signal=out_free

end code=0
