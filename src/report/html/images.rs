//! The page's images: each distinct image of the cases read once, decoded with the size limits
//! of [`crate::image`], and embedded once as a small JPEG thumbnail and, within the page's byte
//! budget, a full-size copy (shown on click, and under the deals boxes).
//!
//! Every embedded image is the text of one `<script type="text/plain" id="t-N">` (thumbnail) or
//! `id="full-N"` element, which the browser neither parses nor decodes. An `<img data-src="t-N">`
//! names the one it shows; the page's script sets its `src` when the row comes near the viewport
//! (an `IntersectionObserver`), so a page of ten thousand cases decodes only the images on
//! screen, and a thumbnail shared by many cases is stored once. A source PNG or JPEG small enough
//! is embedded byte for byte as its full image; a larger one is downscaled to
//! [`ImageOptions::full_side`]. Thumbnails come first in the budget; full images then take what
//! is left, in first-use order, so a very large run still gets a file a browser opens (a click
//! then enlarges the thumbnail).

use std::collections::HashMap;
use std::io::Cursor;

use base64::Engine;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::case::{hex, ImageSource};

/// How images are embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// Longest side of a thumbnail, in pixels.
    pub thumb_side: u32,
    /// Longest side of a full image that is re-encoded (larger sources are downscaled).
    pub full_side: u32,
    /// Most bytes of images (as base64) embedded in one page: thumbnails first, then full images;
    /// an image past it is left out with a note (30 MB keeps 10,000 distinct thumbnails).
    pub budget: usize,
    /// JPEG quality of thumbnails and re-encoded full images.
    pub quality: u8,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            thumb_side: 96,
            full_side: 1600,
            budget: 30 * 1024 * 1024,
            quality: 70,
        }
    }
}

/// One embedded image.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// Index into [`ImageStore::thumbs`].
    pub thumb: usize,
    pub thumb_width: u32,
    pub thumb_height: u32,
    /// Size of the source image.
    pub width: u32,
    pub height: u32,
    /// Index into [`ImageStore::fulls`], when the full image fits the budget.
    pub full: Option<usize>,
}

impl Embedded {
    /// The element id of the thumbnail's data.
    pub fn thumb_id(&self) -> String {
        format!("t-{}", self.thumb)
    }
    /// The element id of the full image's data, or of the thumbnail past the budget.
    pub fn best_id(&self) -> String {
        self.full
            .map_or_else(|| self.thumb_id(), |i| format!("full-{i}"))
    }
}

/// Every image of a page, by source.
#[derive(Debug, Default)]
pub struct ImageStore {
    index: HashMap<String, Result<Embedded, String>>,
    /// Thumbnails as data URIs, one per distinct image.
    pub thumbs: Vec<String>,
    /// Full images as data URIs, in first-use order.
    pub fulls: Vec<String>,
    /// Bytes of thumbnails and full images embedded (as base64 data URIs).
    pub embedded_bytes: usize,
}

fn key(src: &ImageSource) -> String {
    match src {
        ImageSource::Path(p) => format!("path:{}", p.display()),
        ImageSource::DataUri(u) => format!("data:{}", hex(&Sha256::digest(u.as_bytes()))),
    }
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    let mut s = format!("data:{mime};base64,");
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut s);
    s
}

fn jpeg(img: &image::RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let mut buf = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut buf, quality)
        .encode_image(img)
        .map_err(|e| format!("cannot encode a JPEG: {e}"))?;
    Ok(buf.into_inner())
}

/// The MIME type of PNG or JPEG bytes, from their signature.
fn mime_of(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else {
        None
    }
}

fn read(src: &ImageSource) -> Result<(Vec<u8>, String), String> {
    match src {
        ImageSource::Path(p) => Ok((
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            p.display().to_string(),
        )),
        ImageSource::DataUri(u) => Ok((
            crate::image::decode_data_uri(u).map_err(|e| e.to_string())?,
            "data URI".to_owned(),
        )),
    }
}

fn decode(bytes: &[u8], origin: &str) -> Result<image::RgbImage, String> {
    let rgb = crate::image::decode(bytes, origin).map_err(|e| e.to_string())?;
    let (w, h) = (rgb.width as u32, rgb.height as u32);
    image::RgbImage::from_raw(w, h, rgb.pixels)
        .ok_or_else(|| format!("{origin}: decoded pixels do not fill {w}x{h}"))
}

/// `(w, h)` scaled to fit `side`, never up.
fn fit((w, h): (u32, u32), side: u32) -> (u32, u32) {
    let s = (side as f64 / w.max(h) as f64).min(1.0);
    (
        ((w as f64 * s).round() as u32).max(1),
        ((h as f64 * s).round() as u32).max(1),
    )
}

/// The thumbnail of a source, and whether its bytes can serve as the full image as they are.
fn thumbnail(src: &ImageSource, opts: &ImageOptions) -> Result<(Embedded, String), String> {
    let (bytes, origin) = read(src)?;
    let img = decode(&bytes, &origin)?;
    let (w, h) = img.dimensions();
    let (tw, th) = fit((w, h), opts.thumb_side);
    let thumb = image::imageops::thumbnail(&img, tw, th);
    let uri = data_uri("image/jpeg", &jpeg(&thumb, opts.quality)?);
    let e = Embedded {
        thumb: 0,
        thumb_width: tw,
        thumb_height: th,
        width: w,
        height: h,
        full: None,
    };
    Ok((e, uri))
}

/// The full image of a source: its own bytes when small enough (read from the header alone),
/// else a downscaled JPEG.
fn full(src: &ImageSource, opts: &ImageOptions) -> Result<String, String> {
    let (bytes, origin) = read(src)?;
    if let Some(mime) = mime_of(&bytes) {
        let dims = image::ImageReader::new(Cursor::new(&bytes))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        if dims.is_some_and(|(w, h)| w.max(h) <= opts.full_side) {
            return Ok(data_uri(mime, &bytes));
        }
    }
    let img = decode(&bytes, &origin)?;
    let (fw, fh) = fit(img.dimensions(), opts.full_side);
    let scaled = image::imageops::resize(&img, fw, fh, FilterType::Triangle);
    Ok(data_uri("image/jpeg", &jpeg(&scaled, opts.quality)?))
}

impl ImageStore {
    /// Reads and embeds every distinct image of `sources` (in parallel): all thumbnails, then
    /// full images in first-use order while the budget lasts. An unreadable image is kept as its
    /// error, which the page shows in place of the image.
    pub fn build<'a>(
        sources: impl IntoIterator<Item = &'a ImageSource>,
        opts: &ImageOptions,
    ) -> Self {
        let mut seen = HashMap::new();
        let mut order: Vec<(&ImageSource, String)> = Vec::new();
        for s in sources {
            let k = key(s);
            if seen.insert(k.clone(), ()).is_none() {
                order.push((s, k));
            }
        }
        let mut store = Self::default();
        let thumbs: Vec<Result<(Embedded, String), String>> =
            order.par_iter().map(|(s, _)| thumbnail(s, opts)).collect();
        let mut ok: Vec<usize> = Vec::new();
        for (i, ((_, k), t)) in order.iter().zip(thumbs).enumerate() {
            let entry = t.and_then(|(mut e, uri)| {
                if store.embedded_bytes + uri.len() > opts.budget {
                    return Err("left out to keep the page within its size budget".to_owned());
                }
                e.thumb = store.thumbs.len();
                store.embedded_bytes += uri.len();
                store.thumbs.push(uri);
                ok.push(i);
                Ok(e)
            });
            store.index.insert(k.clone(), entry);
        }
        // Full images in chunks, so candidates past the budget are not all held at once.
        'fulls: for chunk in ok.chunks(32) {
            let done: Vec<Result<String, String>> =
                chunk.par_iter().map(|&i| full(order[i].0, opts)).collect();
            for (&i, f) in chunk.iter().zip(done) {
                let Ok(f) = f else { continue };
                if store.embedded_bytes + f.len() > opts.budget {
                    break 'fulls;
                }
                store.embedded_bytes += f.len();
                if let Some(Ok(e)) = store.index.get_mut(&order[i].1) {
                    e.full = Some(store.fulls.len());
                }
                store.fulls.push(f);
            }
        }
        store
    }

    /// The embedded image of a source given to [`ImageStore::build`].
    pub fn get(&self, src: &ImageSource) -> Option<&Result<Embedded, String>> {
        self.index.get(&key(src))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
        });
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        buf.into_inner()
    }

    #[test]
    fn thumbnails_full_images_budget_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.png");
        std::fs::write(&big, png(800, 400)).unwrap();
        let small = ImageSource::DataUri(data_uri("image/png", &png(20, 10)));
        let missing = ImageSource::Path(dir.path().join("nope.png"));
        let big = ImageSource::Path(big);
        let opts = ImageOptions {
            full_side: 500,
            thumb_side: 160,
            ..ImageOptions::default()
        };
        let store = ImageStore::build([&big, &small, &big, &missing], &opts);
        assert_eq!(store.fulls.len(), 2, "one full image per distinct source");

        let e = store.get(&big).unwrap().as_ref().unwrap();
        assert_eq!(
            (e.width, e.height, e.thumb_width, e.thumb_height),
            (800, 400, 160, 80)
        );
        assert_eq!(store.thumbs.len(), 2, "one thumbnail per distinct source");
        assert!(store.thumbs[e.thumb].starts_with("data:image/jpeg;base64,"));
        let full = &store.fulls[e.full.unwrap()];
        assert!(
            full.starts_with("data:image/jpeg;base64,"),
            "over full_side: re-encoded"
        );
        let back =
            crate::image::decode(&crate::image::decode_data_uri(full).unwrap(), "t").unwrap();
        assert_eq!((back.width, back.height), (500, 250));

        let s = store.get(&small).unwrap().as_ref().unwrap();
        assert_eq!(
            store.fulls[s.full.unwrap()],
            match &small {
                ImageSource::DataUri(u) => u.clone(),
                _ => unreachable!(),
            },
            "a small PNG is kept byte for byte"
        );
        assert_eq!((s.thumb_width, s.thumb_height), (20, 10), "never upscaled");

        let err = store.get(&missing).unwrap().as_ref().unwrap_err();
        assert!(err.contains("nope.png"), "{err}");

        let thumbs: usize = store.thumbs.iter().map(String::len).sum();
        let tight = ImageStore::build(
            [&big, &small],
            &ImageOptions {
                budget: thumbs + 10,
                ..opts
            },
        );
        assert!(
            tight.fulls.is_empty(),
            "thumbnails first, no room left for full images"
        );
        assert_eq!(tight.thumbs.len(), 2);
        let e = tight.get(&big).unwrap().as_ref().unwrap();
        assert_eq!(
            e.best_id(),
            e.thumb_id(),
            "past the budget the thumbnail stands in"
        );
    }
}
