//! Regenerates the task example suites: their inputs under `fixtures/tasks/examples/` (flyer pages
//! with printed prices, a spam TSV with a pre-filled image cache, price rows, labelled scene photos),
//! the suites `cases/{flyer_deals,product_spam,product_price,photo_labels}.jsonl` (through the same
//! importers `vlmtest import` runs), and synthetic replay answers in `fixtures/replay/`.
//!
//! Usage: `cargo run --bin vlmtest-fixtures [PROJECT_ROOT]`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use vlmtest::case::hex;
use vlmtest::task::import::split::SplitMix64;
use vlmtest::task::import::{download, load_with, write_jsonl, ImportOptions};
use vlmtest::task::render::{flyer_page, product_photo, scene_photo, FlyerItem};

mod replay;

const STORES: [(&str, &[&[(&str, f64, &str)]]); 2] = [
    (
        "freshmart",
        &[
            &[
                ("BANANAS", 0.59, "LB"),
                ("WHOLE MILK", 3.49, "EACH"),
                ("EGGS 12", 2.99, "EACH"),
                ("APPLES", 1.29, "LB"),
            ],
            &[
                ("CHICKEN", 4.99, "LB"),
                ("RICE 2KG", 5.49, "EACH"),
                ("TOMATOES", 2.19, "KG"),
            ],
            &[
                ("COFFEE", 7.99, "EACH"),
                ("BUTTER", 3.79, "EACH"),
                ("CHEESE", 9.99, "KG"),
                ("BREAD", 2.49, "EACH"),
                ("GRAPES", 3.29, "LB"),
            ],
        ],
    ),
    (
        "cornerstore",
        &[
            &[("COLA 6PK", 4.49, "EACH"), ("CHIPS", 1.99, "EACH")],
            &[
                ("ORANGES", 0.99, "LB"),
                ("YOGURT", 0.79, "EACH"),
                ("PASTA", 1.49, "EACH"),
            ],
        ],
    ),
];

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("path has a parent")?)?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn flyers(dir: &Path) -> Result<()> {
    for (store, pages) in STORES {
        for (k, page) in pages.iter().enumerate() {
            let items: Vec<FlyerItem> = page
                .iter()
                .map(|(n, p, u)| FlyerItem {
                    name: (*n).into(),
                    price: *p,
                    unit: (*u).into(),
                })
                .collect();
            let (img, deals) = flyer_page(&store.to_uppercase(), &items);
            let stem = format!("{:04}", k + 1);
            std::fs::create_dir_all(dir.join(store))?;
            img.save(dir.join(store).join(format!("{stem}.jpg")))?;
            write(
                &dir.join(format!("{store}_annotated/{stem}.json")),
                serde_json::to_string_pretty(&deals)? + "\n",
            )?;
        }
    }
    Ok(())
}

const SPAMMY: [&str; 8] = [
    "FREE shipping!!! DM for discounts",
    "#sale #deal #cheap #promo",
    "Buy now best price link in bio",
    "Follow us for giveaways",
    "nike adidas puma gucci prada",
    "Limited offer click link",
    "WhatsApp us for wholesale",
    "100% original best cheap",
];
const PLAIN: [&str; 8] = [
    "Ceramic coffee mug, 350 ml",
    "Cotton t-shirt, blue, size M",
    "Wooden toy train set",
    "Stainless steel kitchen knife",
    "LED desk lamp with USB port",
    "Handmade soy candle",
    "Leather wallet, brown",
    "Glass water bottle 1 l",
];

fn spam(dir: &Path) -> Result<()> {
    let mut rng = SplitMix64::new(1);
    let mut tsv = String::from("product_id\tdescription\timage_url\tlabel\tyes_count\tno_count\n");
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache)?;
    for k in 0..48usize {
        let is_spam = rng.below(100) < 40;
        let base = if is_spam {
            SPAMMY[rng.below(8) as usize]
        } else {
            PLAIN[rng.below(8) as usize]
        };
        // Some spam hides behind a plain description; the image or the details give it away.
        let desc = if is_spam && k % 5 == 0 {
            format!("{} - see photo", PLAIN[k % 8])
        } else {
            format!("{base} (item {k})")
        };
        let url = format!("https://img.example.invalid/products/p{k:03}.jpg");
        let (yes, no) = if is_spam {
            (3 + rng.below(3), rng.below(2))
        } else {
            (rng.below(2), 3 + rng.below(3))
        };
        tsv.push_str(&format!(
            "P{k:03}\t{desc}\t{url}\t{}\t{yes}\t{no}\n",
            u8::from(is_spam)
        ));
        if k % 3 != 0 {
            let word = if is_spam {
                "SALE"
            } else {
                desc.split_whitespace().next().unwrap_or("ITEM")
            };
            let path = download::cache_path(&cache, &url);
            product_photo(&word.to_uppercase(), k)
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    // Rows the importer must reject or drop, with the reason in the report.
    tsv.push_str("P001\tduplicate id\t\t1\t1\t0\nP900\tbad label\t\t2\t0\t0\nP901\tnot yet labeled\t\t\t0\t0\n");
    write(&dir.join("products.tsv"), tsv)
}

fn price(dir: &Path) -> Result<()> {
    let items = [
        ("Organic honey 500 g jar", "food", 8.99),
        ("USB-C charging cable 2 m", "electronics", 12.49),
        ("Pack of 6 AA batteries", "electronics", 6.99),
        ("Dark chocolate bar 100 g", "food", 2.79),
        ("Wireless mouse, black", "electronics", 19.99),
        ("Olive oil extra virgin 1 l", "food", 11.5),
        ("Bluetooth speaker, waterproof", "electronics", 39.0),
        ("Basmati rice 5 kg", "food", 14.25),
        ("HDMI cable 1.5 m", "electronics", 7.49),
        ("Green tea, 40 bags", "food", 4.19),
        ("Phone case, clear silicone", "electronics", 9.99),
        ("Peanut butter 340 g", "food", 3.89),
        ("Laptop stand, aluminium", "electronics", 29.95),
        ("Sparkling water 12 x 330 ml", "food", 6.49),
        ("Noise cancelling earbuds", "electronics", 79.0),
        ("Espresso beans 1 kg", "food", 17.99),
    ];
    let mut out = String::new();
    for (k, (name, cat, p)) in items.iter().enumerate() {
        let row = serde_json::json!({"sample_id": format!("s{k:03}"), "category": cat,
            "catalog_content": format!("Item Name: {name}\nValue: 1\nUnit: Count"), "price": p});
        out.push_str(&row.to_string());
        out.push('\n');
    }
    out.push_str("{\"sample_id\": \"s900\", \"catalog_content\": \"missing price\"}\n");
    write(&dir.join("rows.jsonl"), out)
}

fn labels(dir: &Path) -> Result<()> {
    let scenes = [
        ("scene.food", vec!["object.food"]),
        ("scene.document", vec![]),
        ("scene.product", vec!["object.electronics.laptop"]),
        ("scene.people", vec![]),
        ("scene.screenshot", vec!["object.electronics.phone"]),
        ("scene.food", vec!["object.food.dessert", "object.food"]),
    ];
    let mut gt = String::new();
    for k in 0..18u32 {
        let (scene, objects) = &scenes[k as usize % scenes.len()];
        let img = scene_photo(scene, k);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        let id = hex(&Sha256::digest(&png));
        write(&dir.join("images").join(format!("{id}.png")), &png)?;
        let row = serde_json::json!({"image_id": id, "scene": [scene], "objects": objects, "attributes": {
            "attr.has_person": *scene == "scene.people", "attr.is_document": *scene == "scene.document",
            "attr.is_screenshot": *scene == "scene.screenshot"}});
        gt.push_str(&row.to_string());
        gt.push('\n');
    }
    write(&dir.join("ground_truth.jsonl"), gt)
}

fn main() -> Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let ex = root.join("fixtures/tasks/examples");
    flyers(&ex.join("flyers"))?;
    spam(&ex.join("spam"))?;
    price(&ex.join("price"))?;
    labels(&ex.join("labels"))?;
    let mut spam_opts = ImportOptions {
        val_fraction: 0.5,
        ..ImportOptions::default()
    };
    spam_opts.download.cache_dir = ex.join("spam/cache");
    spam_opts.download.offline = true;
    let label_opts = ImportOptions {
        images: Some(ex.join("labels/images")),
        ..ImportOptions::default()
    };
    let suites = [
        (
            "deals",
            ex.join("flyers"),
            "flyer_deals",
            ImportOptions::default(),
        ),
        (
            "spam",
            ex.join("spam/products.tsv"),
            "product_spam",
            spam_opts,
        ),
        (
            "price",
            ex.join("price/rows.jsonl"),
            "product_price",
            ImportOptions::default(),
        ),
        (
            "labels",
            ex.join("labels/ground_truth.jsonl"),
            "photo_labels",
            label_opts,
        ),
    ];
    for (kind, input, suite, opts) in suites {
        let imported = load_with(kind, &input, suite, &opts)?;
        for r in &imported.rejected {
            eprintln!("{suite}: rejected: {r}");
        }
        write_jsonl(&imported.cases, &root.join(format!("cases/{suite}.jsonl")))?;
        let answers = replay::answers(kind, &imported.cases);
        let lines: String = answers.iter().map(|l| l.to_string() + "\n").collect();
        write(&root.join(format!("fixtures/replay/{suite}.jsonl")), lines)?;
        eprintln!("{suite}: {} cases", imported.cases.len());
    }
    Ok(())
}
