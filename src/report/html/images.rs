//! The page's images: each distinct image of the cases read once, decoded with the size limits
//! of [`crate::image`], and embedded as a small JPEG thumbnail (shown in the rows) and, within a
//! byte budget, a full-size copy (shown on click).
//!
//! Thumbnails sit in `<img loading="lazy">` tags, so the browser decodes only the rows it shows.
//! Full images are stored once each, deduplicated by source, as the text of a
//! `<script type="text/plain">` element that the browser does not parse or decode until a click
//! asks for it. A source PNG or JPEG small enough is embedded byte for byte; a larger one is
//! downscaled to [`ImageOptions::full_side`]. Past [`ImageOptions::full_budget`] bytes, full
//! images are left out (the click then enlarges the thumbnail), so a page of many thousands of
//! cases stays a file a browser opens.

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
    /// Most bytes of full images (as base64) embedded in one page.
    pub full_budget: usize,
    /// JPEG quality of thumbnails and re-encoded full images.
    pub quality: u8,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            thumb_side: 160,
            full_side: 1600,
            full_budget: 32 * 1024 * 1024,
            quality: 80,
        }
    }
}

/// One embedded image.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// `data:image/jpeg;base64,…` of the thumbnail.
    pub thumb: String,
    pub thumb_width: u32,
    pub thumb_height: u32,
    /// Size of the source image.
    pub width: u32,
    pub height: u32,
    /// Index into [`ImageStore::fulls`], when the full image fits the budget.
    pub full: Option<usize>,
}

/// Every image of a page, by source.
#[derive(Debug, Default)]
pub struct ImageStore {
    index: HashMap<String, Result<Embedded, String>>,
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

/// A processed image before the budget is applied: the thumbnail and the full-size candidate.
struct Processed {
    embedded: Embedded,
    full: String,
}

fn process(src: &ImageSource, opts: &ImageOptions) -> Result<Processed, String> {
    let (bytes, origin) = match src {
        ImageSource::Path(p) => (
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        ImageSource::DataUri(u) => (
            crate::image::decode_data_uri(u).map_err(|e| e.to_string())?,
            "data URI".to_owned(),
        ),
    };
    let rgb = crate::image::decode(&bytes, &origin).map_err(|e| e.to_string())?;
    let (w, h) = (rgb.width as u32, rgb.height as u32);
    let img = image::RgbImage::from_raw(w, h, rgb.pixels)
        .ok_or_else(|| format!("{origin}: decoded pixels do not fill {w}x{h}"))?;
    let fit = |side: u32| {
        let s = (side as f64 / w.max(h) as f64).min(1.0);
        (
            ((w as f64 * s).round() as u32).max(1),
            ((h as f64 * s).round() as u32).max(1),
        )
    };
    let (tw, th) = fit(opts.thumb_side);
    let thumb = image::imageops::thumbnail(&img, tw, th);
    let thumb_uri = data_uri("image/jpeg", &jpeg(&thumb, opts.quality)?);
    let full = match mime_of(&bytes) {
        Some(mime) if w.max(h) <= opts.full_side => data_uri(mime, &bytes),
        _ => {
            let (fw, fh) = fit(opts.full_side);
            let scaled = image::imageops::resize(&img, fw, fh, FilterType::Triangle);
            data_uri("image/jpeg", &jpeg(&scaled, opts.quality)?)
        }
    };
    Ok(Processed {
        embedded: Embedded {
            thumb: thumb_uri,
            thumb_width: tw,
            thumb_height: th,
            width: w,
            height: h,
            full: None,
        },
        full,
    })
}

impl ImageStore {
    /// Reads and embeds every distinct image of `sources` (in parallel), keeping full images in
    /// first-use order until the budget is spent. An unreadable image is kept as its error, which
    /// the page shows in place of the image.
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
        let mut full_bytes = 0usize;
        // Chunks bound the memory held by full-size candidates that the budget may drop.
        for chunk in order.chunks(64) {
            let done: Vec<Result<Processed, String>> =
                chunk.par_iter().map(|(s, _)| process(s, opts)).collect();
            for ((_, k), p) in chunk.iter().zip(done) {
                let entry = p.map(|p| {
                    let mut e = p.embedded;
                    if full_bytes + p.full.len() <= opts.full_budget {
                        e.full = Some(store.fulls.len());
                        full_bytes += p.full.len();
                        store.embedded_bytes += p.full.len();
                        store.fulls.push(p.full);
                    }
                    store.embedded_bytes += e.thumb.len();
                    e
                });
                store.index.insert(k.clone(), entry);
            }
        }
        store
    }

    /// The embedded image of a source given to [`ImageStore::build`].
    pub fn get(&self, src: &ImageSource) -> Option<&Result<Embedded, String>> {
        self.index.get(&key(src))
    }

    /// The full image (or, past the budget, the thumbnail) of an embedded image.
    pub fn best_uri<'a>(&'a self, e: &'a Embedded) -> &'a str {
        e.full.map_or(e.thumb.as_str(), |i| self.fulls[i].as_str())
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
            ..ImageOptions::default()
        };
        let store = ImageStore::build([&big, &small, &big, &missing], &opts);
        assert_eq!(store.fulls.len(), 2, "one full image per distinct source");

        let e = store.get(&big).unwrap().as_ref().unwrap();
        assert_eq!(
            (e.width, e.height, e.thumb_width, e.thumb_height),
            (800, 400, 160, 80)
        );
        assert!(e.thumb.starts_with("data:image/jpeg;base64,"));
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

        let tight = ImageStore::build(
            [&big, &small],
            &ImageOptions {
                full_budget: 10,
                ..opts
            },
        );
        assert!(tight.fulls.is_empty());
        let e = tight.get(&big).unwrap().as_ref().unwrap();
        assert_eq!(
            tight.best_uri(e),
            e.thumb,
            "past the budget the thumbnail stands in"
        );
    }
}
