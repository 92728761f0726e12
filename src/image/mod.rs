//! Image input for vision-language models: decoding with size limits, and the Qwen3-VL processor.
//!
//! `load` turns an [`ImageSource`] into RGB8 pixels (refusing images whose header claims more
//! pixels than a limit, so a decompression bomb fails before it allocates); `preprocess` turns them
//! into the patch rows and `grid_thw` the vision tower reads, equal to the reference processor
//! (`Qwen2VLImageProcessor`, used by Qwen3-VL): smart resize within min/max pixels, bicubic resize,
//! rescale, normalise, temporal patch duplication and patch flattening in merge-window order.

pub mod resize;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::case::ImageSource;

/// Largest accepted width or height of a decoded image, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest allocation a decoder may make, in bytes.
pub const MAX_ALLOC: u64 = 512 * 1024 * 1024;

/// Errors from reading or preprocessing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image file {path} could not be read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("image {origin} could not be decoded: {reason}")]
    Decode { origin: String, reason: String },
    #[error("malformed data URI: {0}")]
    DataUri(String),
    #[error("image {origin} is {width}x{height}: {reason}")]
    Size {
        origin: String,
        width: usize,
        height: usize,
        reason: String,
    },
    #[error("preprocessor config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
}

/// A decoded image: interleaved RGB, 8 bits a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Describes where an image came from for error messages, without dumping a whole data URI.
    fn origin(source: &ImageSource) -> String {
        match source {
            ImageSource::Path(p) => p.display().to_string(),
            ImageSource::DataUri(uri) => format!("data URI ({} bytes)", uri.len()),
        }
    }
}

/// Reads and decodes an image, refusing images over [`MAX_SIDE`] per side or [`MAX_ALLOC`] bytes.
pub fn load(source: &ImageSource) -> Result<RgbImage, ImageError> {
    let bytes = match source {
        ImageSource::Path(path) => std::fs::read(path).map_err(|e| ImageError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?,
        ImageSource::DataUri(uri) => decode_data_uri(uri)?,
    };
    decode(&bytes, &RgbImage::origin(source))
}

/// Decodes encoded image bytes (PNG or JPEG) with the size limits.
pub fn decode(bytes: &[u8], origin: &str) -> Result<RgbImage, ImageError> {
    let err = |e: &dyn std::fmt::Display| ImageError::Decode {
        origin: origin.to_owned(),
        reason: e.to_string(),
    };
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(&e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| err(&e))?;
    let rgb = decoded.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Ok(RgbImage {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

/// Decodes the payload of a `data:image/...;base64,...` URI.
pub fn decode_data_uri(uri: &str) -> Result<Vec<u8>, ImageError> {
    let rest = uri
        .strip_prefix("data:")
        .ok_or_else(|| ImageError::DataUri("it does not start with `data:`".into()))?;
    let (header, payload) = rest
        .split_once(',')
        .ok_or_else(|| ImageError::DataUri("no `,` between header and payload".into()))?;
    if !header.ends_with(";base64") {
        return Err(ImageError::DataUri(format!(
            "header `{header}` is not base64-encoded"
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| ImageError::DataUri(format!("bad base64 payload: {e}")))
}

/// The fields of `preprocessor_config.json` the Qwen3-VL processor uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f32,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
    /// Whose resize arithmetic to follow: `"pil"`, else torchvision (transformers 5's default).
    pub backend: resize::Backend,
}

#[derive(Deserialize)]
struct RawSize {
    shortest_edge: Option<usize>,
    longest_edge: Option<usize>,
}

#[derive(Deserialize)]
struct RawPreprocessor {
    patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    merge_size: Option<usize>,
    size: Option<RawSize>,
    min_pixels: Option<usize>,
    max_pixels: Option<usize>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    rescale_factor: Option<f32>,
    do_resize: Option<bool>,
    do_rescale: Option<bool>,
    do_normalize: Option<bool>,
    backend: Option<String>,
}

impl PreprocessorConfig {
    /// Reads `preprocessor_config.json`. `size.shortest_edge`/`longest_edge` (the current key)
    /// win over the older `min_pixels`/`max_pixels`, as in the reference processor.
    pub fn from_file(path: &Path) -> Result<Self, ImageError> {
        let text = std::fs::read_to_string(path).map_err(|e| ImageError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_json(&text).map_err(|reason| ImageError::Config {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawPreprocessor = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let min_pixels = raw
            .size
            .as_ref()
            .and_then(|s| s.shortest_edge)
            .or(raw.min_pixels)
            .unwrap_or(56 * 56);
        let max_pixels = raw
            .size
            .as_ref()
            .and_then(|s| s.longest_edge)
            .or(raw.max_pixels)
            .unwrap_or(28 * 28 * 1280);
        let cfg = Self {
            patch_size: raw.patch_size.unwrap_or(16),
            temporal_patch_size: raw.temporal_patch_size.unwrap_or(2),
            merge_size: raw.merge_size.unwrap_or(2),
            min_pixels,
            max_pixels,
            image_mean: raw.image_mean.unwrap_or([0.5; 3]),
            image_std: raw.image_std.unwrap_or([0.5; 3]),
            rescale_factor: raw.rescale_factor.unwrap_or(1.0 / 255.0),
            do_resize: raw.do_resize.unwrap_or(true),
            do_rescale: raw.do_rescale.unwrap_or(true),
            do_normalize: raw.do_normalize.unwrap_or(true),
            backend: match raw.backend.as_deref() {
                Some("pil") => resize::Backend::Pil,
                _ => resize::Backend::Torchvision,
            },
        };
        if cfg.patch_size == 0 || cfg.merge_size == 0 || cfg.temporal_patch_size == 0 {
            return Err("patch_size, merge_size and temporal_patch_size must be positive".into());
        }
        if cfg.min_pixels > cfg.max_pixels {
            return Err(format!(
                "min pixels {} exceed max pixels {}",
                cfg.min_pixels, cfg.max_pixels
            ));
        }
        if cfg.image_std.contains(&0.0) {
            return Err("image_std has a zero entry".into());
        }
        Ok(cfg)
    }

    /// The side length every resized dimension is a multiple of.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }
}

/// The reference `smart_resize`: the nearest multiples of `factor` (Python's round-half-even),
/// scaled down or up to keep the area within `[min_pixels, max_pixels]`.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), String> {
    if height == 0 || width == 0 {
        return Err("image has a zero side".into());
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(format!(
            "aspect ratio {:.1} exceeds 200",
            h.max(w) / h.min(w)
        ));
    }
    let mut h_bar = ((h / f).round_ties_even() * f) as usize;
    let mut w_bar = ((w / f).round_ties_even() * f) as usize;
    if h_bar * w_bar > max_pixels {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = factor.max(((h / beta / f).floor() * f) as usize);
        w_bar = factor.max(((w / beta / f).floor() * f) as usize);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = ((h * beta / f).ceil() * f) as usize;
        w_bar = ((w * beta / f).ceil() * f) as usize;
    }
    Ok((h_bar, w_bar))
}

/// Preprocessed pixels of one image: `rows × cols` patch rows, and the grid in patches.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    /// Row-major `(grid_t·grid_h·grid_w, C·T·P·P)`.
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    /// `[t, h, w]` in patches.
    pub grid_thw: [usize; 3],
}

impl Pixels {
    /// Number of placeholder tokens the image takes in the prompt.
    pub fn tokens(&self, merge_size: usize) -> usize {
        self.rows / (merge_size * merge_size)
    }
}

/// Runs the Qwen3-VL image processor on one image.
pub fn preprocess(img: &RgbImage, cfg: &PreprocessorConfig) -> Result<Pixels, ImageError> {
    let size_err = |reason: String| ImageError::Size {
        origin: "input".into(),
        width: img.width,
        height: img.height,
        reason,
    };
    let (h, w) = if cfg.do_resize {
        smart_resize(
            img.height,
            img.width,
            cfg.factor(),
            cfg.min_pixels,
            cfg.max_pixels,
        )
        .map_err(size_err)?
    } else {
        (img.height, img.width)
    };
    if h % cfg.factor() != 0 || w % cfg.factor() != 0 {
        return Err(size_err(format!(
            "{w}x{h} is not a multiple of {} (patch size × merge size); enable do_resize",
            cfg.factor()
        )));
    }
    let pixels = if (h, w) == (img.height, img.width) {
        img.pixels.clone()
    } else {
        resize::resize_rgb8(&img.pixels, img.width, img.height, w, h, cfg.backend)
    };
    // Rescale and normalise in f32 as the reference does: (x * factor - mean) / std.
    let mut planes = vec![0f32; 3 * h * w];
    for c in 0..3 {
        let (mean, std) = (cfg.image_mean[c], cfg.image_std[c]);
        for i in 0..h * w {
            let mut v = f32::from(pixels[i * 3 + c]);
            if cfg.do_rescale {
                v *= cfg.rescale_factor;
            }
            if cfg.do_normalize {
                v = (v - mean) / std;
            }
            planes[c * h * w + i] = v;
        }
    }
    Ok(patchify(&planes, h, w, cfg))
}

/// Flattens `(C, H, W)` planes into patch rows: the frame repeated `temporal_patch_size` times,
/// rows ordered `(t, block row, block col, row in block, col in block)`, columns
/// `(channel, frame, y in patch, x in patch)`.
fn patchify(planes: &[f32], h: usize, w: usize, cfg: &PreprocessorConfig) -> Pixels {
    let (p, m, tp) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    let (gh, gw) = (h / p, w / p);
    let cols = 3 * tp * p * p;
    let rows = gh * gw;
    let mut data = Vec::with_capacity(rows * cols);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let (py0, px0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                    for c in 0..3 {
                        for _frame in 0..tp {
                            for y in 0..p {
                                let start = c * h * w + (py0 + y) * w + px0;
                                data.extend_from_slice(&planes[start..start + p]);
                            }
                        }
                    }
                }
            }
        }
    }
    Pixels {
        data,
        rows,
        cols,
        grid_thw: [1, gh, gw],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> PreprocessorConfig {
        PreprocessorConfig::from_json(
            r#"{"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
                "size": {"shortest_edge": 4096, "longest_edge": 65536},
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#,
        )
        .unwrap()
    }

    #[test]
    fn smart_resize_matches_reference_values() {
        // Values computed with transformers' `smart_resize` (factor 32 unless stated).
        assert_eq!(smart_resize(64, 96, 32, 4096, 65536), Ok((64, 96)));
        // 48 / 32 = 1.5 rounds half to even (2), 80 / 32 = 2.5 rounds to 2.
        assert_eq!(smart_resize(48, 80, 32, 1024, 65536), Ok((64, 64)));
        // Too small: scaled up with ceil.
        assert_eq!(smart_resize(10, 20, 32, 4096, 65536), Ok((64, 96)));
        // Too large: scaled down with floor.
        assert_eq!(smart_resize(1000, 2000, 32, 4096, 65536), Ok((160, 352)));
        assert_eq!(smart_resize(1080, 1920, 28, 3136, 1003520), Ok((728, 1316)));
        assert!(smart_resize(1, 500, 32, 4096, 65536).is_err());
    }

    #[test]
    fn preprocess_shapes_and_values() {
        let img = RgbImage {
            width: 64,
            height: 32,
            pixels: vec![255u8; 64 * 32 * 3],
        };
        let mut c = cfg();
        c.min_pixels = 1024;
        let px = preprocess(&img, &c).unwrap();
        assert_eq!(px.grid_thw, [1, 2, 4]);
        assert_eq!((px.rows, px.cols), (8, 3 * 2 * 16 * 16));
        assert_eq!(px.tokens(2), 2);
        assert!(px.data.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn patch_rows_follow_merge_windows() {
        // Encode the pixel position into the red channel to check where each patch lands.
        let (w, h) = (64usize, 64usize);
        let mut pixels = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                pixels[(y * w + x) * 3] = ((y / 16) * 4 + x / 16) as u8;
            }
        }
        let mut c = cfg();
        c.do_normalize = false;
        c.do_rescale = false;
        c.min_pixels = 64 * 64;
        let px = preprocess(
            &RgbImage {
                width: w,
                height: h,
                pixels,
            },
            &c,
        )
        .unwrap();
        let firsts: Vec<f32> = (0..px.rows).map(|r| px.data[r * px.cols]).collect();
        // Rows: block (0,0) patches (0,0),(0,1),(1,0),(1,1) then block (0,1) ...
        assert_eq!(
            firsts,
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
        // The two temporal copies are equal.
        let row = &px.data[px.cols..2 * px.cols];
        assert_eq!(row[..256], row[256..512]);
    }

    #[test]
    fn data_uri_round_trip_and_errors() {
        let img = image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let uri = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png)
        );
        let decoded = load(&ImageSource::DataUri(uri)).unwrap();
        assert_eq!((decoded.width, decoded.height), (3, 2));
        assert_eq!(&decoded.pixels[..3], &[10, 20, 30]);
        assert!(matches!(
            decode_data_uri("image/png;base64,AAAA"),
            Err(ImageError::DataUri(_))
        ));
        assert!(matches!(
            decode_data_uri("data:image/png,AAAA"),
            Err(ImageError::DataUri(_))
        ));
        assert!(matches!(
            decode(b"not an image", "x"),
            Err(ImageError::Decode { .. })
        ));
    }

    #[test]
    fn oversized_header_is_refused_before_decoding() {
        // A PNG whose header claims 100000 x 100000 pixels: a decompression bomb in miniature.
        let img = image::RgbImage::from_pixel(1, 1, image::Rgb([0, 0, 0]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        // IHDR width/height live at bytes 16..24; the CRC is then wrong, so fix it too.
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode(&png, "bomb.png").unwrap_err().to_string();
        assert!(err.contains("bomb.png"), "{err}");
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load(&ImageSource::Path("/nonexistent/cat.png".into())).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cat.png"));
    }

    proptest! {
        #[test]
        fn smart_resize_respects_bounds(h in 1usize..3000, w in 1usize..3000) {
            prop_assume!(h.max(w) / h.min(w) <= 150);
            let (rh, rw) = smart_resize(h, w, 32, 4096, 1_000_000).unwrap();
            prop_assert_eq!(rh % 32, 0);
            prop_assert_eq!(rw % 32, 0);
            prop_assert!(rh * rw <= 1_000_000);
            prop_assert!(rh >= 32 && rw >= 32);
        }

        #[test]
        fn preprocessor_config_parser_never_panics(s in ".{0,200}") {
            let _ = PreprocessorConfig::from_json(&s);
        }
    }
}
