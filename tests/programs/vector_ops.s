; Vector engine exercise on an 8x32 f32 matrix X (segment 0):
;   Y = softmax(X) along rows                                   -> segment 1
;   Z = relu(X) + b, b a 32-vector broadcast over rows (seg 2)   -> segment 3
;   T = transpose(X) (32x8)                                      -> segment 4
;   Q = lut(clamp(round(X * 16) as s8)) with a table from seg 2  -> segment 5
.seg x  0 size=1024 role=input
.seg y  1 size=1024 role=output
.seg bt 2 size=384  role=const      ; b (32 f32 = 128 bytes), then a 256-byte table
.seg z  3 size=1024 role=output
.seg t  4 size=1024 role=output
.seg q  5 size=256  role=output

.equ X    0x0000                     ; scratchpad layout
.equ B    0x0400
.equ TAB  0x0480
.equ MAX  0x0600                     ; 8 row maxima
.equ SUM  0x0620                     ; 8 row sums
.equ E    0x0800
.equ Y    0x0c00
.equ Z    0x1000
.equ T    0x1400
.equ S16  0x1800                     ; the scalar 16.0
.equ XS   0x1900                     ; X * 16
.equ QI   0x1d00                     ; as s8
.equ Q    0x1e00

.sem loaded 0
.sem done   1

.dma mat   x_bytes=1024
.dma btab  x_bytes=384
.dma bytes x_bytes=256

.shape rows8    cols=32 rows=8 dst_row=128 src0_row=128 src1_row=128
.shape rowmax   cols=32 rows=8 dst_row=4 src0_row=128
.shape bcast    cols=32 rows=8 dst_row=128 src0_row=128 src1_row=4 src1_col_bcast=1
.shape addrow   cols=32 rows=8 dst_row=128 src0_row=128 src1_row=0
.shape scale    cols=32 rows=8 dst_row=128 src0_row=128 src1_row=0 src1_col_bcast=1
.shape to8      cols=32 rows=8 dst_row=32 src0_row=128
.shape lut8     cols=256 rows=1
.shape tr       cols=32 rows=8 dst_row=32 src0_row=128
.shape vec8     cols=8                             ; 8 contiguous elements

dma.load desc=mat seg=x offset=0 dst=spad:X
dma.load desc=btab seg=bt offset=0 dst=spad:B
; 16.0 as f32 is 0x41800000. The LD queue completes in order, so this signal also covers the loads.
dma.fill desc=bytes value=0x41800000 dst=spad:S16 signal=loaded

vx.reduce op=max axis=cols dtype=f32 shape=rowmax dst=spad:MAX src=spad:X out_dtype=f32 wait=loaded
vx.binary op=sub dtype=f32 shape=bcast dst=spad:E src0=spad:X src1=spad:MAX
vx.unary op=exp dtype=f32 shape=rows8 dst=spad:E src=spad:E out_dtype=f32
vx.reduce op=sum axis=cols dtype=f32 shape=rowmax dst=spad:SUM src=spad:E out_dtype=f32
vx.unary op=recip dtype=f32 shape=vec8 dst=spad:SUM src=spad:SUM out_dtype=f32
vx.binary op=mul dtype=f32 shape=bcast dst=spad:Y src0=spad:E src1=spad:SUM
vx.unary op=relu dtype=f32 shape=rows8 dst=spad:Z src=spad:X out_dtype=f32
vx.binary op=add dtype=f32 shape=addrow dst=spad:Z src0=spad:Z src1=spad:B
vx.transpose dtype=f32 shape=tr dst=spad:T src=spad:X
vx.binary op=mul dtype=f32 shape=scale dst=spad:XS src0=spad:X src1=spad:S16
vx.unary op=mov dtype=f32 shape=to8 dst=spad:QI src=spad:XS out_dtype=s8
vx.lut dtype=s8 shape=lut8 dst=spad:Q src=spad:QI table=spad:TAB signal=done

nop queue=st wait=done                          ; the stores below follow it in order
dma.store desc=mat seg=y offset=0 src=spad:Y
dma.store desc=mat seg=z offset=0 src=spad:Z
dma.store desc=mat seg=t offset=0 src=spad:T
dma.store desc=bytes seg=q offset=0 src=spad:Q
end code=0
