//! Screenshots: libvirt hands back whatever the hypervisor wrote, with a MIME type. QEMU
//! writes binary PPM (`P6`, `image/x-portable-pixmap`); the test driver and others write
//! PNG. The API promises PNG, so PPM is converted here with the `png` crate.

/// The PNG file signature.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A screenshot that cannot be turned into PNG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImageError(pub String);

/// Turn the screenshot bytes of MIME type `mime` into a PNG file.
pub fn to_png(mime: &str, data: Vec<u8>) -> Result<Vec<u8>, ImageError> {
    if data.starts_with(PNG_SIGNATURE) {
        return Ok(data);
    }
    if data.starts_with(b"P6") {
        return ppm_to_png(&data);
    }
    Err(ImageError(format!(
        "the hypervisor returned a screenshot of type `{mime}` ({} bytes), neither PNG nor binary PPM",
        data.len()
    )))
}

/// Header fields of a binary PPM.
#[derive(Debug, PartialEq, Eq)]
struct PpmHeader {
    /// Pixels per row.
    width: u32,
    /// Rows.
    height: u32,
    /// Largest sample value (1..=65535); above 255 samples take two bytes, big-endian.
    maxval: u32,
    /// Offset of the first pixel byte.
    data_offset: usize,
}

/// Parse `P6 WIDTH HEIGHT MAXVAL` (whitespace and `#` comments between the fields, exactly
/// one whitespace byte before the pixels).
fn ppm_header(data: &[u8]) -> Result<PpmHeader, ImageError> {
    let bad = |what: &str| ImageError(format!("malformed PPM screenshot: {what}"));
    let mut pos = 2; // after "P6"
    let mut fields = [0u32; 3];
    for (i, field) in fields.iter_mut().enumerate() {
        // whitespace and comments
        loop {
            match data.get(pos) {
                Some(b) if b.is_ascii_whitespace() => pos += 1,
                Some(b'#') => {
                    while data.get(pos).is_some_and(|&b| b != b'\n') {
                        pos += 1;
                    }
                }
                Some(_) => break,
                None => return Err(bad("header ends early")),
            }
        }
        let start = pos;
        while data.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let digits = std::str::from_utf8(&data[start..pos]).map_err(|_| bad("header"))?;
        *field = digits
            .parse()
            .map_err(|_| bad(["width", "height", "maxval"][i]))?;
    }
    if !data.get(pos).is_some_and(u8::is_ascii_whitespace) {
        return Err(bad("no whitespace after maxval"));
    }
    let [width, height, maxval] = fields;
    if width == 0 || height == 0 || maxval == 0 || maxval > 65535 {
        return Err(bad("zero size or maxval out of range"));
    }
    Ok(PpmHeader {
        width,
        height,
        maxval,
        data_offset: pos + 1,
    })
}

/// Binary PPM to an RGB PNG (8 or 16 bits per sample, as the PPM has).
fn ppm_to_png(data: &[u8]) -> Result<Vec<u8>, ImageError> {
    let h = ppm_header(data)?;
    let bytes_per_sample: u64 = if h.maxval > 255 { 2 } else { 1 };
    let need = u64::from(h.width) * u64::from(h.height) * 3 * bytes_per_sample;
    let pixels = &data[h.data_offset..];
    if (pixels.len() as u64) < need {
        return Err(ImageError(format!(
            "truncated PPM screenshot: {}x{} needs {need} pixel bytes, got {}",
            h.width,
            h.height,
            pixels.len()
        )));
    }
    let pixels = &pixels[..need as usize];
    // Scale to the full range when maxval is not 255/65535 (rare, but allowed).
    let scaled: Vec<u8>;
    let pixels = if h.maxval == 255 || h.maxval == 65535 {
        pixels
    } else if bytes_per_sample == 1 {
        scaled = pixels
            .iter()
            .map(|&v| ((u32::from(v).min(h.maxval) * 255) / h.maxval) as u8)
            .collect();
        &scaled
    } else {
        scaled = pixels
            .chunks_exact(2)
            .flat_map(|c| {
                let v = u32::from(u16::from_be_bytes([c[0], c[1]])).min(h.maxval);
                (((v * 65535) / h.maxval) as u16).to_be_bytes()
            })
            .collect();
        &scaled
    };
    let mut out = Vec::with_capacity(pixels.len() / 4 + 1024);
    let mut enc = png::Encoder::new(&mut out, h.width, h.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(if bytes_per_sample == 2 {
        png::BitDepth::Sixteen
    } else {
        png::BitDepth::Eight
    });
    enc.set_compression(png::Compression::Fast);
    let err =
        |e: png::EncodingError| ImageError(format!("cannot encode the screenshot as PNG: {e}"));
    let mut w = enc.write_header().map_err(err)?;
    w.write_image_data(pixels).map_err(err)?;
    w.finish().map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut r = png::Decoder::new(std::io::Cursor::new(png_bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn ppm_becomes_png_with_the_same_pixels() {
        let mut ppm = b"P6\n# made by a test\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        let png_bytes = to_png("image/x-portable-pixmap", ppm).unwrap();
        assert!(png_bytes.starts_with(PNG_SIGNATURE));
        let (info, pixels) = decode(&png_bytes);
        assert_eq!((info.width, info.height), (2, 1));
        assert_eq!(pixels, [255, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn sixteen_bit_and_odd_maxval() {
        let mut ppm = b"P6 1 1 65535\n".to_vec();
        ppm.extend_from_slice(&[0xff, 0xff, 0, 0, 0x80, 0]);
        let (info, px) = decode(&to_png("image/x-portable-pixmap", ppm).unwrap());
        assert_eq!(info.bit_depth, png::BitDepth::Sixteen);
        assert_eq!(px, [0xff, 0xff, 0, 0, 0x80, 0]);
        let mut ppm = b"P6 1 1 15\n".to_vec();
        ppm.extend_from_slice(&[15, 0, 5]);
        let (_, px) = decode(&to_png("image/x-portable-pixmap", ppm).unwrap());
        assert_eq!(px, [255, 0, 85]);
    }

    #[test]
    fn png_passes_through_and_junk_is_refused() {
        let png_bytes = {
            let mut p = b"P6 1 1 255\n".to_vec();
            p.extend_from_slice(&[1, 2, 3]);
            to_png("x", p).unwrap()
        };
        assert_eq!(to_png("image/png", png_bytes.clone()).unwrap(), png_bytes);
        assert!(to_png("image/gif", b"GIF89a".to_vec())
            .unwrap_err()
            .0
            .contains("image/gif"));
        assert!(to_png("x", b"P6 2 2 255\n\x00\x00".to_vec())
            .unwrap_err()
            .0
            .contains("truncated"));
        assert!(to_png("x", b"P6 2".to_vec()).is_err());
        assert!(to_png("x", b"P6 0 1 255\n".to_vec()).is_err());
    }
}
