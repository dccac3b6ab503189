//! Images (PNG and JPEG): their size and format, and resizing one file into another, with no
//! pixel ever becoming a Rhai value.

use std::{
    io::{BufReader, BufWriter},
    path::Path,
    sync::Arc,
};

use image::{ImageFormat, ImageReader, imageops::FilterType};
use rhai::{Engine, INT, Map};

use super::{Result, invalid, method, script_error};
use crate::permissions::Permissions;

pub(super) fn register(engine: &mut Engine, permissions: &Arc<Permissions>) {
    let p = permissions.clone();
    method(engine, "image_info", move |path: &str| info(&p, path));
    let p = permissions.clone();
    method(
        engine,
        "image_resize",
        move |src: &str, dst: &str, options: Map| resize(&p, src, dst, &options),
    );
}

fn reader(permissions: &Permissions, path: &str) -> Result<ImageReader<BufReader<std::fs::File>>> {
    let (_, file) = permissions
        .open_read(Path::new(path))
        .map_err(script_error)?;
    ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| invalid(format!("{path:?}: {e}")))
}

/// `#{width, height, format}` from the file's header, without decoding its pixels.
fn info(permissions: &Permissions, path: &str) -> Result<Map> {
    let reader = reader(permissions, path)?;
    let format = reader
        .format()
        .ok_or_else(|| invalid(format!("{path:?} is not a PNG or JPEG image")))?;
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| invalid(format!("{path:?}: {e}")))?;
    let mut info = Map::new();
    info.insert("width".into(), INT::from(width).into());
    info.insert("height".into(), INT::from(height).into());
    info.insert("format".into(), format_name(format).into());
    Ok(info)
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
        _ => "other",
    }
}

/// Resizes `src` into `dst` (its format from `dst`'s extension): exactly `#{width, height}`, or
/// one side given and the other following the aspect ratio, rounded. `filter`: `nearest`,
/// `triangle` (the default), `catmull-rom`, `gaussian` or `lanczos3`.
fn resize(permissions: &Permissions, src: &str, dst: &str, options: &Map) -> Result<Map> {
    let side = |name: &str| -> Result<Option<u32>> {
        match options.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_int()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| invalid(format!("`{name}` must be a number of pixels above 0"))),
        }
    };
    let filter = match options.get("filter").map(|f| f.to_string()).as_deref() {
        None | Some("triangle") => FilterType::Triangle,
        Some("nearest") => FilterType::Nearest,
        Some("catmull-rom") => FilterType::CatmullRom,
        Some("gaussian") => FilterType::Gaussian,
        Some("lanczos3") => FilterType::Lanczos3,
        Some(other) => return Err(invalid(format!("unknown filter {other:?}"))),
    };
    let format = ImageFormat::from_path(dst)
        .ok()
        .filter(|f| matches!(f, ImageFormat::Png | ImageFormat::Jpeg))
        .ok_or_else(|| {
            invalid(format!(
                "{dst:?}: the destination must end in .png, .jpg or .jpeg"
            ))
        })?;
    let image = reader(permissions, src)?
        .decode()
        .map_err(|e| invalid(format!("{src:?}: {e}")))?;
    let (w, h) = (image.width(), image.height());
    let (width, height) = match (side("width")?, side("height")?) {
        (Some(width), Some(height)) => (width, height),
        (Some(width), None) => (width, scaled(h, width, w)),
        (None, Some(height)) => (scaled(w, height, h), height),
        (None, None) => return Err(invalid("image_resize needs a `width`, a `height` or both")),
    };
    let resized = image.resize_exact(width, height, filter);
    let resized = match format {
        ImageFormat::Jpeg => image::DynamicImage::ImageRgb8(resized.to_rgb8()),
        _ => resized,
    };
    let (_, file) = permissions
        .open_write(Path::new(dst), false)
        .map_err(script_error)?;
    resized
        .write_to(&mut BufWriter::new(file), format)
        .map_err(|e| invalid(format!("{dst:?}: {e}")))?;
    let mut done = Map::new();
    done.insert("width".into(), INT::from(width).into());
    done.insert("height".into(), INT::from(height).into());
    Ok(done)
}

/// `side` scaled by `to / from`, rounded, at least 1.
fn scaled(side: u32, to: u32, from: u32) -> u32 {
    ((f64::from(side) * f64::from(to) / f64::from(from)).round() as u32).max(1)
}
