//! Device configurations: the hardware parameters a program is compiled and validated for, and
//! the derived figures (peak rate, roofline ridge point, fingerprint).
//!
//! Instruction field widths never depend on these; the validator checks a program's values
//! against the configuration it will run on, and the blob records the configuration's
//! fingerprint so a runtime refuses programs built for different hardware.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::fields::Dtype;

/// Feature bit: the matrix engine multiplies bf16.
pub const FEATURE_BF16: u32 = 1 << 0;
/// Feature bit: the matrix engine multiplies f32 (at 1/16 of the int8 rate).
pub const FEATURE_F32_MATMUL: u32 = 1 << 1;
/// Every defined feature bit.
pub const FEATURES_ALL: u32 = FEATURE_BF16 | FEATURE_F32_MATMUL;

/// Cycles of fill and drain the systolic array adds to every `mx.matmul`, in units of its size.
pub const ARRAY_FILL_DRAIN_FACTOR: u64 = 2;
/// Fixed pipeline latency of every vector instruction, in cycles.
pub const VX_LATENCY: u64 = 8;
/// How many times slower transcendental and division vector operations are.
pub const VX_SLOW_FACTOR: u64 = 4;

/// Parameters of one accelerator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Name: a built-in's on the command line, or one a user gives a configuration built at
    /// run time (recorded in blobs; informational, not part of the fingerprint).
    pub name: String,
    /// The matrix array is `array_dim × array_dim` multiply-accumulate cells.
    pub array_dim: u32,
    /// Vector engine lanes: elements processed per cycle.
    pub vx_lanes: u32,
    /// Scratchpad size in bytes.
    pub spad_bytes: u32,
    /// Accumulator memory size in bytes.
    pub acc_bytes: u32,
    /// Core clock.
    pub clock_hz: u64,
    /// Sustained DRAM bandwidth, shared by both DMA engines.
    pub dram_bytes_per_sec: u64,
    /// Cycles from issuing a DRAM read to the first data.
    pub dram_read_latency: u32,
    /// Cycles from issuing a DRAM write to its completion being visible.
    pub dram_write_latency: u32,
    /// DRAM burst size: every contiguous run is rounded up to whole bursts.
    pub dram_burst_bytes: u32,
    /// On-chip copy and fill bandwidth.
    pub sram_bytes_per_cycle: u32,
    /// `FEATURE_*` bits.
    pub features: u32,
    /// Cycles the matrix array takes per streamed input row of int8 data (1: a row every
    /// cycle; 2: a half-rate array, as one with half the multiply-accumulate units
    /// time-shared). bf16 and f32 rows take 4 and 16 times as long. Timing only: not part of
    /// the fingerprint.
    pub array_row_cycles: u32,
}

impl DeviceConfig {
    /// The reference device: a 32×32 int8 array at 1 GHz (2.048 TOPS), 1 MiB scratchpad,
    /// 256 KiB accumulator, 8 GB/s DRAM; comparable to an Ethos-U65/U85-class embedded NPU.
    pub fn default_npu() -> DeviceConfig {
        DeviceConfig {
            name: "default".into(),
            array_dim: 32,
            vx_lanes: 32,
            spad_bytes: 1 << 20,
            acc_bytes: 256 << 10,
            clock_hz: 1_000_000_000,
            dram_bytes_per_sec: 8_000_000_000,
            dram_read_latency: 500,
            dram_write_latency: 250,
            dram_burst_bytes: 64,
            sram_bytes_per_cycle: 64,
            features: FEATURES_ALL,
            array_row_cycles: 1,
        }
    }

    /// A small device for fast tests: an 8×8 array, 64 KiB scratchpad, 16 KiB accumulator.
    /// Small limits make tiling and bounds errors show up with small programs.
    pub fn tiny() -> DeviceConfig {
        DeviceConfig {
            name: "tiny".into(),
            array_dim: 8,
            vx_lanes: 8,
            spad_bytes: 64 << 10,
            acc_bytes: 16 << 10,
            clock_hz: 1_000_000_000,
            dram_bytes_per_sec: 8_000_000_000,
            dram_read_latency: 100,
            dram_write_latency: 50,
            dram_burst_bytes: 64,
            sram_bytes_per_cycle: 32,
            features: FEATURES_ALL,
            array_row_cycles: 1,
        }
    }

    /// The budget of an Arm Ethos-U65-512, so simulated cycles can be set beside Vela's
    /// estimates for that NPU: 512 int8 MAC/cycle (a 32×32 array taking 2 cycles per row),
    /// 1 GHz, 384 KiB of on-chip SRAM (320 KiB scratchpad, 64 KiB accumulator), DRAM at
    /// 12 GB/s with 500-cycle read and 250-cycle write latency. Like the Ethos-U it has no
    /// float datapath in the matrix engine (no bf16 or f32 matmul features): float
    /// convolutions and matrix products do not compile for it.
    pub fn u65() -> DeviceConfig {
        DeviceConfig {
            name: "u65".into(),
            array_dim: 32,
            vx_lanes: 16,
            spad_bytes: 320 << 10,
            acc_bytes: 64 << 10,
            clock_hz: 1_000_000_000,
            dram_bytes_per_sec: 12_000_000_000,
            dram_read_latency: 500,
            dram_write_latency: 250,
            dram_burst_bytes: 64,
            sram_bytes_per_cycle: 32,
            features: 0,
            array_row_cycles: 2,
        }
    }

    /// Every built-in configuration.
    pub fn builtin() -> Vec<DeviceConfig> {
        vec![DeviceConfig::default_npu(), DeviceConfig::tiny(), DeviceConfig::u65()]
    }

    /// The built-in configuration called `name`.
    pub fn by_name(name: &str) -> Option<DeviceConfig> {
        DeviceConfig::builtin().into_iter().find(|c| c.name == name)
    }

    /// Checks a configuration built at run time against what the ISA can address and the
    /// timing model can use; built-ins pass. Limits: `array_dim` and `vx_lanes` powers of two
    /// from 4 to 128 (a weight load's `k` and `n` are 8-bit fields; tiles are planned in
    /// powers of two); scratchpad and accumulator 16 KiB to 8 MiB in 64-byte multiples (a
    /// local address has 23 offset bits); clock 1 MHz to 10 GHz; DRAM 1 MB/s to 1 TB/s;
    /// latencies at most 10^6 cycles; a power-of-two burst of 16 to 4096 bytes; on-chip
    /// bandwidth 1 to 4096 bytes per cycle; 1 to 16 cycles per array row; only defined
    /// feature bits. A name is 1 to 64
    /// printable ASCII characters.
    ///
    /// Errors: the first field out of range, with its value and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        let pow2 = |name: &str, v: u64, lo: u64, hi: u64| {
            if v.is_power_of_two() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} = {v}: must be a power of two from {lo} to {hi}"))
            }
        };
        let range = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} = {v}: must be from {lo} to {hi}"))
            }
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "name {:?}: must be 1 to 64 printable ASCII characters without spaces",
                self.name
            ));
        }
        pow2("array_dim", self.array_dim.into(), 4, 128)?;
        pow2("vx_lanes", self.vx_lanes.into(), 4, 128)?;
        let max_local = u64::from(crate::fields::LocalAddr::MAX_OFFSET);
        for (name, v) in [("spad_bytes", self.spad_bytes), ("acc_bytes", self.acc_bytes)] {
            range(name, v.into(), 16 << 10, max_local)?;
            if v % 64 != 0 {
                return Err(format!("{name} = {v}: must be a multiple of 64"));
            }
        }
        range("clock_hz", self.clock_hz, 1_000_000, 10_000_000_000)?;
        range("dram_bytes_per_sec", self.dram_bytes_per_sec, 1_000_000, 1_000_000_000_000)?;
        range("dram_read_latency", self.dram_read_latency.into(), 0, 1_000_000)?;
        range("dram_write_latency", self.dram_write_latency.into(), 0, 1_000_000)?;
        pow2("dram_burst_bytes", self.dram_burst_bytes.into(), 16, 4096)?;
        range("sram_bytes_per_cycle", self.sram_bytes_per_cycle.into(), 1, 4096)?;
        range("array_row_cycles", self.array_row_cycles.into(), 1, 16)?;
        if self.features & !FEATURES_ALL != 0 {
            return Err(format!(
                "features = {:#x}: defined bits are {FEATURES_ALL:#x}",
                self.features
            ));
        }
        Ok(())
    }

    /// Whether the matrix engine multiplies `dtype` inputs.
    pub fn matmul_supports(&self, dtype: Dtype) -> bool {
        match dtype {
            Dtype::S8 | Dtype::U8 => true,
            Dtype::Bf16 => self.features & FEATURE_BF16 != 0,
            Dtype::F32 => self.features & FEATURE_F32_MATMUL != 0,
            Dtype::S16 | Dtype::S32 => false,
        }
    }

    /// Cycles the matrix engine spends per input row for `dtype` (the rate divisor):
    /// `array_row_cycles`, times 4 for bf16 and 16 for f32.
    pub fn matmul_cycles_per_row(&self, dtype: Dtype) -> u64 {
        let per = match dtype {
            Dtype::Bf16 => 4,
            Dtype::F32 => 16,
            _ => 1,
        };
        per * u64::from(self.array_row_cycles.max(1))
    }

    /// Peak multiply-accumulates per second for `dtype` inputs (0 if unsupported).
    pub fn peak_macs_per_sec(&self, dtype: Dtype) -> u64 {
        if !self.matmul_supports(dtype) {
            return 0;
        }
        let per_cycle = u64::from(self.array_dim) * u64::from(self.array_dim);
        per_cycle * self.clock_hz / self.matmul_cycles_per_row(dtype)
    }

    /// The roofline ridge point for `dtype`: operations (2 per MAC) per DRAM byte at which
    /// compute and bandwidth limits meet.
    pub fn ridge_ops_per_byte(&self, dtype: Dtype) -> f64 {
        2.0 * self.peak_macs_per_sec(dtype) as f64 / self.dram_bytes_per_sec as f64
    }

    /// Cycles to move `bytes` over DRAM at the sustained bandwidth (rounded up).
    pub fn dram_cycles(&self, bytes: u64) -> u64 {
        let num = u128::from(bytes) * u128::from(self.clock_hz);
        let den = u128::from(self.dram_bytes_per_sec.max(1));
        u64::try_from(num.div_ceil(den)).unwrap_or(u64::MAX)
    }

    /// The parameters that decide whether a program is valid on the device, as recorded in a
    /// blob (timing parameters are not among them).
    pub fn target(&self) -> Target {
        Target {
            isa_major: crate::ISA_VERSION.0,
            isa_minor: crate::ISA_VERSION.1,
            array_dim: self.array_dim,
            vx_lanes: self.vx_lanes,
            spad_bytes: self.spad_bytes,
            acc_bytes: self.acc_bytes,
            features: self.features,
            config_name: self.name.to_string(),
        }
    }

    /// The target's fingerprint.
    pub fn fingerprint(&self) -> [u8; 16] {
        self.target().fingerprint()
    }
}

/// What a program was built for: the ISA version and the hardware parameters it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// ISA major version.
    pub isa_major: u16,
    /// ISA minor version.
    pub isa_minor: u16,
    /// Matrix array size.
    pub array_dim: u32,
    /// Vector lanes.
    pub vx_lanes: u32,
    /// Scratchpad bytes.
    pub spad_bytes: u32,
    /// Accumulator bytes.
    pub acc_bytes: u32,
    /// `FEATURE_*` bits the program needs.
    pub features: u32,
    /// The configuration's name (informational; not part of the fingerprint).
    pub config_name: String,
}

impl Target {
    /// The canonical bytes the fingerprint hashes.
    pub fn fingerprint_preimage(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        for v in [self.array_dim, self.vx_lanes, self.spad_bytes, self.acc_bytes, self.features] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.isa_major.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    /// First 16 bytes of SHA-256 over the preimage.
    pub fn fingerprint(&self) -> [u8; 16] {
        let digest = Sha256::digest(self.fingerprint_preimage());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// Whether a device with configuration `cfg` runs programs built for this target.
    pub fn runs_on(&self, cfg: &DeviceConfig) -> bool {
        let dev = cfg.target();
        self.isa_major == dev.isa_major
            && self.isa_minor <= dev.isa_minor
            && self.fingerprint() == dev.fingerprint()
    }
}

/// Prints the configuration with its derived figures, as the tools show it.
impl fmt::Display for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ghz = self.clock_hz as f64 / 1e9;
        writeln!(f, "config {}", self.name)?;
        if self.array_row_cycles > 1 {
            writeln!(
                f,
                "  matrix array     {0}x{0} at {ghz} GHz, {1} cycles per int8 row",
                self.array_dim, self.array_row_cycles
            )?;
        } else {
            writeln!(f, "  matrix array     {0}x{0} at {ghz} GHz", self.array_dim)?;
        }
        writeln!(f, "  vector lanes     {}", self.vx_lanes)?;
        writeln!(f, "  scratchpad       {} KiB", self.spad_bytes / 1024)?;
        writeln!(f, "  accumulator      {} KiB", self.acc_bytes / 1024)?;
        writeln!(
            f,
            "  DRAM             {} GB/s, read latency {} cycles, write latency {} cycles, {}-byte bursts",
            self.dram_bytes_per_sec as f64 / 1e9,
            self.dram_read_latency,
            self.dram_write_latency,
            self.dram_burst_bytes
        )?;
        for dtype in [Dtype::S8, Dtype::Bf16, Dtype::F32] {
            let peak = self.peak_macs_per_sec(dtype);
            if peak == 0 {
                writeln!(f, "  {dtype:<5} matmul    unsupported")?;
            } else {
                writeln!(
                    f,
                    "  {dtype:<5} peak      {:.3} TMAC/s = {:.3} TOPS, ridge point {:.0} ops/byte",
                    peak as f64 / 1e12,
                    2.0 * peak as f64 / 1e12,
                    self.ridge_ops_per_byte(dtype)
                )?;
            }
        }
        let fp: String = self.fingerprint().iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "  fingerprint      {fp}")
    }
}
