//! Chrome trace event export: one track per engine (and one for the front-end), one complete
//! event per instruction. The JSON opens in Perfetto (ui.perfetto.dev) and chrome://tracing.

use std::fmt::Write as _;

use accelc_isa::Engine;

use super::TraceEvent;

/// The trace as Chrome trace event JSON; timestamps in microseconds at `clock_hz`.
pub fn chrome_json(events: &[TraceEvent], clock_hz: u64) -> String {
    let us = |cycles: u64| cycles as f64 * 1e6 / clock_hz as f64;
    let mut out = String::from("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    let tracks = Engine::ALL.iter().map(|e| e.name()).chain(std::iter::once("front-end"));
    for (tid, name) in tracks.enumerate() {
        let _ = writeln!(
            out,
            "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":{tid},\"args\":{{\"name\":\"{name}\"}}}},"
        );
    }
    for (n, e) in events.iter().enumerate() {
        let tid = e.engine.map_or(4, |e| e as usize);
        let sep = if n + 1 == events.len() { "" } else { "," };
        let _ = writeln!(
            out,
            "{{\"name\":\"{}\",\"cat\":\"inst\",\"ph\":\"X\",\"pid\":0,\"tid\":{tid},\"ts\":{:.3},\"dur\":{:.3},\"args\":{{\"inst\":{},\"start_cycle\":{},\"end_cycle\":{}{}}}}}{sep}",
            e.mnemonic,
            us(e.start),
            us(e.end.saturating_sub(e.start)),
            e.inst,
            e.start,
            e.end,
            e.marker.map_or(String::new(), |id| format!(",\"marker\":{id}"))
        );
    }
    if events.is_empty() {
        // Drop the trailing comma of the last metadata event.
        out.truncate(out.trim_end().trim_end_matches(',').len());
        out.push('\n');
    }
    out.push_str("]}\n");
    out
}
