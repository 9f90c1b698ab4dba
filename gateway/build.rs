//! Lists every file under `gateway/web/` into `$OUT_DIR/web_assets.rs`: one
//! `(path, include_bytes!(…), etag)` row per file, sorted by path, for
//! `src/web/assets.rs` to embed and look up (the gateway serves no file from disk).
//!
//! A file's path is its name relative to `web/`, except that the vendored libraries drop
//! their `vendor/` prefix (`web/vendor/novnc/core/rfb.js` is served as `novnc/core/rfb.js`).
//! The ETag is a hash of the bytes, computed here once instead of at every start.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("web");
    // cargo re-runs this when anything under web/ is added, removed or changed
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut rows: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|f| {
            let rel = f
                .strip_prefix(&root)
                .expect("under web/")
                .to_str()
                .unwrap_or_else(|| panic!("{}: file names under web/ must be UTF-8", f.display()))
                .to_owned();
            let served = rel.strip_prefix("vendor/").unwrap_or(&rel).to_owned();
            (served, f)
        })
        .collect();
    rows.sort();
    for pair in rows.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "web/{} and web/vendor/{} would be served at the same path",
            pair[0].0,
            pair[0].0
        );
    }
    let mut out = String::from("&[\n");
    for (served, file) in &rows {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let _ = writeln!(
            out,
            "    ({served:?}, include_bytes!({:?}), \"\\\"{:016x}-{:x}\\\"\"),",
            file.display().to_string(),
            fnv1a(&bytes),
            bytes.len()
        );
    }
    out.push(']');
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("web_assets.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}

/// Every regular file below `dir`, depth first.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable folder entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.is_file() {
            files.push(path);
        }
    }
}

/// FNV-1a, 64 bits: enough to tell two versions of a file apart for `If-None-Match`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
