//! Generated fixture images for the example suites: flyer pages with deals printed by the project
//! (so the ground-truth boxes are exact), product shots for the spam suite, and simple scene
//! photos for the labels suite. Everything is deterministic for a given input.

pub mod font;

use image::{Rgb, RgbImage};

use super::deals::Deal;
use font::{draw_text, text_width};

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const RED: Rgb<u8> = Rgb([200, 20, 20]);

/// A deal to print: its name, price and unit (`each`, `kg`, `lb`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct FlyerItem {
    pub name: String,
    pub price: f64,
    pub unit: String,
}

fn fill(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>) {
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            img.put_pixel(x, y, c);
        }
    }
}

/// Pastel colour number `k` of a small fixed palette.
fn pastel(k: usize) -> Rgb<u8> {
    const P: [[u8; 3]; 6] = [
        [255, 236, 179],
        [200, 230, 201],
        [187, 222, 251],
        [248, 187, 208],
        [225, 190, 231],
        [255, 204, 188],
    ];
    Rgb(P[k % P.len()])
}

/// Price as printed: `$1.99`.
pub fn price_text(price: f64) -> String {
    format!("${price:.2}")
}

/// A flyer page: a title bar, then the deals in two columns of 220×110 boxes with the name, the
/// price in large red digits and `/unit`. Returns the page and the deals with their boxes.
pub fn flyer_page(title: &str, items: &[FlyerItem]) -> (RgbImage, Vec<Deal>) {
    let (w, box_w, box_h, gap, top) = (480u32, 220u32, 110u32, 13u32, 50u32);
    let rows = (items.len() as u32).div_ceil(2).max(1);
    let h = top + rows * (box_h + gap) + gap;
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    fill(&mut img, 0, 0, w, top - 10, RED);
    draw_text(&mut img, gap, 10, title, 3, WHITE);
    let mut deals = Vec::new();
    for (k, it) in items.iter().enumerate() {
        let (col, row) = (k as u32 % 2, k as u32 / 2);
        let x0 = gap + col * (box_w + gap + 1);
        let y0 = top + row * (box_h + gap);
        fill(&mut img, x0, y0, x0 + box_w, y0 + box_h, pastel(k));
        draw_text(&mut img, x0 + 8, y0 + 8, &it.name, 2, INK);
        let price = price_text(it.price);
        draw_text(&mut img, x0 + 8, y0 + 38, &price, 5, RED);
        let unit = format!("/{}", it.unit);
        let ux = (x0 + 16 + text_width(&price, 5)).min(x0 + box_w - text_width(&unit, 2));
        draw_text(&mut img, ux, y0 + 80, &unit, 2, INK);
        deals.push(Deal {
            name: it.name.clone(),
            price: it.price,
            unit: Some(it.unit.clone()),
            bbox: Some([
                x0 as f64,
                y0 as f64,
                (x0 + box_w) as f64,
                (y0 + box_h) as f64,
            ]),
        });
    }
    (img, deals)
}

/// A 128×128 product shot: a coloured card with the product word on it.
pub fn product_photo(word: &str, colour: usize) -> RgbImage {
    let mut img = RgbImage::from_pixel(128, 128, pastel(colour));
    fill(&mut img, 16, 40, 112, 88, WHITE);
    let text: String = word.chars().take(7).collect();
    let x = 64u32.saturating_sub(text_width(&text, 2) / 2);
    draw_text(&mut img, x, 57, &text, 2, INK);
    img
}

/// A 160×120 synthetic photo whose look follows the scene: a document is white with text lines,
/// a screenshot has a title bar, food has round shapes, a product has a box, people have a face.
pub fn scene_photo(scene: &str, variant: u32) -> RgbImage {
    let shade = (variant * 37 % 60) as u8;
    let mut img = RgbImage::from_pixel(160, 120, Rgb([200 - shade, 200, 190 + shade / 2]));
    match scene {
        "scene.document" => {
            fill(&mut img, 0, 0, 160, 120, WHITE);
            for k in 0..8 {
                fill(
                    &mut img,
                    12,
                    12 + k * 13,
                    148 - (k * 7 + variant) % 40,
                    17 + k * 13,
                    INK,
                );
            }
        }
        "scene.screenshot" => {
            fill(&mut img, 0, 0, 160, 16, Rgb([60, 60, 200]));
            draw_text(&mut img, 4, 4, "SETTINGS", 1, WHITE);
        }
        "scene.food" => {
            for (cx, cy, r) in [(55i32, 60i32, 30i32), (110, 70, 22)] {
                for y in 0..120i32 {
                    for x in 0..160i32 {
                        if (x - cx).pow(2) + (y - cy).pow(2) < r * r {
                            img.put_pixel(x as u32, y as u32, Rgb([230, 120 + shade, 40]));
                        }
                    }
                }
            }
        }
        "scene.people" => {
            fill(&mut img, 60, 20, 100, 60, Rgb([240, 200, 170]));
            fill(&mut img, 50, 60, 110, 120, Rgb([40, 80, 160]));
        }
        _ => fill(&mut img, 40, 30, 120, 100, Rgb([120, 90, 60])),
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flyer_boxes_are_inside_and_disjoint() {
        let items: Vec<FlyerItem> = (0..5)
            .map(|k| FlyerItem {
                name: format!("ITEM {k}"),
                price: 1.0 + k as f64,
                unit: "EACH".into(),
            })
            .collect();
        let (img, deals) = flyer_page("TEST", &items);
        assert_eq!(deals.len(), 5);
        for (i, a) in deals.iter().enumerate() {
            let b = a.bbox.unwrap();
            assert!(b[2] <= img.width() as f64 && b[3] <= img.height() as f64);
            for c in &deals[i + 1..] {
                assert_eq!(crate::metric::matching::iou(b, c.bbox.unwrap()), 0.0);
            }
        }
        assert_eq!(
            flyer_page("TEST", &items).0,
            img,
            "rendering is deterministic"
        );
    }
}
