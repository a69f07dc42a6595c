//! Reading a file a user names (a model, a blob, assembly, segment contents) with the checks
//! every reader needs: only a regular file (a FIFO would block the process, a device such as
//! `/dev/zero` never ends), at most a given size, and allocation failure an error.

use std::io::Read;
use std::path::Path;

/// The largest file any accelc tool reads: 4 GiB (ONNX's protobuf encoding stops at 2 GiB;
/// larger weights live in external data, read by range).
pub const MAX_FILE_BYTES: u64 = 1 << 32;

/// Why a file was not read; both name the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The operating system could not open or read it (missing, no permission).
    Io(String),
    /// It is not a regular file, or larger than allowed: refused without reading it.
    Refused(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(m) | ReadError::Refused(m) => f.write_str(m),
        }
    }
}

impl From<ReadError> for String {
    fn from(e: ReadError) -> String {
        e.to_string()
    }
}

/// The bytes of the regular file at `path`, at most `max` of them.
///
/// Errors (each naming the path): the file cannot be opened or read ([`ReadError::Io`]), is
/// not a regular file (checked before opening, so a FIFO never blocks, and again on the
/// opened file) or is larger than `max` bytes ([`ReadError::Refused`]).
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let shown = path.display();
    let io = |e: std::io::Error| ReadError::Io(format!("cannot read {shown}: {e}"));
    let not_regular = || ReadError::Refused(format!("cannot read {shown}: not a regular file"));
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > max {
        return Err(ReadError::Refused(format!(
            "cannot read {shown}: {} bytes, more than the {max} allowed",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(meta.len() as usize)
        .map_err(|e| ReadError::Refused(format!("cannot read {shown}: {e}")))?;
    // The file may grow while it is read: never past the limit.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::Refused(format!(
            "cannot read {shown}: more than the {max} bytes allowed"
        )));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, synced, then renamed over
/// it), replacing only a regular file: a symlink, device (`/dev/null`), directory or FIFO at
/// `path` is refused before anything is written, and the temporary file never outlives a
/// failure.
///
/// Errors (each naming the path): [`ReadError::Refused`] for a target that is not a regular
/// file, [`ReadError::Io`] when the operating system cannot write or rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReadError> {
    write_atomic_with(path, &mut |f| {
        use std::io::Write;
        f.write_all(bytes).map_err(|e| e.to_string())
    })
}

/// As [`write_atomic`], with the contents written by `write` (to a buffered temporary file it
/// may seek in), so they need not be in memory at once. When `write` fails, its message is
/// the error and nothing at `path` changes.
///
/// Errors: as [`write_atomic`]; `write`'s message as [`ReadError::Io`], naming the path.
pub fn write_atomic_with(
    path: &Path,
    write: &mut dyn FnMut(&mut std::io::BufWriter<std::fs::File>) -> Result<(), String>,
) -> Result<(), ReadError> {
    use std::io::Write;
    let existing = std::fs::symlink_metadata(path).ok();
    if let Some(meta) = existing.as_ref().filter(|m| !m.is_file()) {
        let what = if meta.file_type().is_symlink() {
            "is a symbolic link"
        } else {
            "exists and is not a regular file"
        };
        return Err(ReadError::Refused(format!("{}: {what}; not replacing it", path.display())));
    }
    let file = path
        .file_name()
        .ok_or_else(|| ReadError::Refused(format!("{}: not a file path", path.display())))?;
    // A name near the file system's 255-byte limit leaves no room for the suffix: the temporary
    // name keeps at most 200 bytes of it (whole characters).
    let name = file.to_string_lossy();
    let mut keep = name.len().min(200);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let tmp = path.with_file_name(format!(".{}.tmp-{}", &name[..keep], std::process::id()));
    // Created exclusively, so a symbolic link planted at the temporary name is never followed
    // (one left over from an interrupted run of the same process id is removed first).
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp);
    let created = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).and_then(|()| create())
        }
        r => r,
    };
    let written = created
        .map_err(|e| e.to_string())
        .and_then(|f| {
            // A replaced file keeps its permissions.
            if let Some(meta) = &existing {
                f.set_permissions(meta.permissions()).map_err(|e| e.to_string())?;
            }
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            write(&mut w)?;
            w.flush().map_err(|e| e.to_string())?;
            let f = w.into_inner().map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(ReadError::Io(format!("{}: cannot write: {e}", path.display())));
    }
    Ok(())
}
