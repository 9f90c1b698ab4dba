//! `virtgate screenshot DOM [-o FILE.png]`: `GET /v1/domains/{name}/screenshot`, checked to
//! be a PNG (signature and IHDR) and written atomically (a temporary file in the same
//! folder, then renamed over the target).
//!
//! stdout is one line: `PATH: WIDTHxHEIGHT PNG, N bytes` (e.g. `web1.png: 720x400 PNG,
//! 2043 bytes`). With `-o -` the PNG itself goes to stdout and that line to stderr.
//! Without `-o` the file is `DOM.png` in the current folder (characters other than letters,
//! digits, `-`, `_` and `.` in the name become `_`). An existing file is replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use virtgate_proto::ApiPath;

use crate::error::Error;
use crate::session::Session;

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Largest screenshot accepted (a 4K screen as an uncompressed PNG is ≈ 33 MB).
const MAX_SCREENSHOT: usize = 64 << 20;

/// `virtgate screenshot`
pub async fn run(session: &Session, name: &str, output: Option<&Path>) -> Result<(), Error> {
    let path = ApiPath::DomainAction(name.to_owned(), "screenshot".to_owned());
    let (png, content_type) = session.get_bytes(&path, MAX_SCREENSHOT).await?;
    let (width, height) = png_size(&png).map_err(|detail| Error::BadResponse {
        request: format!("GET {}", path.to_path()),
        detail: match content_type {
            Some(ct) => format!("{detail} (content-type {ct})"),
            None => detail,
        },
    })?;
    let summary = |shown: &str| format!("{shown}: {width}x{height} PNG, {} bytes", png.len());
    if output == Some(Path::new("-")) {
        let mut out = std::io::stdout().lock();
        out.write_all(&png)
            .and_then(|()| out.flush())
            .map_err(Error::Output)?;
        eprintln!("{}", summary("-"));
        return Ok(());
    }
    let target = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_file(name));
    write_atomically(&target, &png)?;
    super::print(&format!("{}\n", summary(&target.display().to_string())))
}

/// `DOM.png` with characters unsafe in a file name replaced.
pub fn default_file(domain: &str) -> PathBuf {
    let mut stem: String = domain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.starts_with('.') {
        stem.replace_range(0..1, "_");
    }
    PathBuf::from(format!("{stem}.png"))
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
pub fn png_size(data: &[u8]) -> Result<(u32, u32), String> {
    if data.len() < 8 || data[..8] != PNG_SIGNATURE {
        let start: String = data
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(format!(
            "the screenshot is not a PNG (it starts with {start})"
        ));
    }
    // length (4) "IHDR" (4) width (4) height (4) ...
    let ihdr = data
        .get(8..24)
        .filter(|c| &c[4..8] == b"IHDR")
        .ok_or_else(|| "the PNG has no IHDR chunk first".to_owned())?;
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (w, h) = (be(&ihdr[8..12]), be(&ihdr[12..16]));
    if w == 0 || h == 0 {
        return Err(format!("the PNG says it is {w}x{h} pixels"));
    }
    Ok((w, h))
}

/// Write `data` to a temporary file next to `target`, then rename it over `target`.
pub fn write_atomically(target: &Path, data: &[u8]) -> Result<(), Error> {
    let fail = |action: &'static str, source: std::io::Error| Error::LocalFile {
        action,
        path: target.to_path_buf(),
        source,
    };
    let file_name = target
        .file_name()
        .ok_or_else(|| fail("write", std::io::ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = target.with_file_name(tmp_name);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, target)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("write", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1x1 PNG header (the rest does not matter to the size check).
    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut v = PNG_SIGNATURE.to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0]);
        v
    }

    #[test]
    fn size_comes_from_ihdr() {
        assert_eq!(png_size(&png(720, 400)), Ok((720, 400)));
        assert!(png_size(&png(0, 400)).unwrap_err().contains("0x400"));
        let e = png_size(b"{\"title\":\"x\"}").unwrap_err();
        assert!(e.contains("not a PNG") && e.contains("7b 22"), "{e}");
        assert!(png_size(&PNG_SIGNATURE).unwrap_err().contains("IHDR"));
        let mut bad = png(1, 1);
        bad[12..16].copy_from_slice(b"IDAT");
        assert!(png_size(&bad).is_err());
    }

    #[test]
    fn default_file_names_are_safe() {
        assert_eq!(default_file("web1"), PathBuf::from("web1.png"));
        assert_eq!(default_file("a/b c"), PathBuf::from("a_b_c.png"));
        assert_eq!(default_file(".."), PathBuf::from("_..png"));
        assert_eq!(default_file("ü"), PathBuf::from("_.png"));
    }

    #[test]
    fn writes_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shot.png");
        std::fs::write(&f, b"old").unwrap();
        write_atomically(&f, b"new").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        let e = write_atomically(&dir.path().join("no/such/x.png"), b"x").unwrap_err();
        assert!(e.to_string().contains("no/such/x.png"), "{e}");
    }
}
