//! The instructions each task's cases put to the model. Importers write them into the cases, so a
//! suite file shows exactly what the model saw.

pub const DEALS_SYSTEM: &str = "You read supermarket flyer pages. List every deal on the page as \
a JSON list and nothing else. Each deal is an object with \"name\" (string), \"price\" (number), \
\"unit\" (string such as \"each\", \"kg\", \"lb\") and \"bbox\" ([x0, y0, x1, y1] in pixels).";

pub const DEALS_USER: &str = "Extract all deals from this flyer page.";

pub const SPAM_SYSTEM: &str = "You moderate product listings. Decide whether the listing is \
keyword spam (brand stuffing, hashtags, calls to action unrelated to the product). Answer with \
strict JSON only: {\"is_spam\": true or false, \"confidence\": number from 0 to 1, \"reason\": \
short string}.";

pub const SPAM_USER: &str = "Is this product listing spam?";

/// Added to the prompt when a spam row's image could not be downloaded (seed 001).
pub const IMAGE_UNAVAILABLE: &str = "Note: image unavailable; judge from the text only.";

pub const PRICE_SYSTEM: &str = "You estimate retail prices of products from their catalog \
entry. Answer with strict JSON only: {\"price\": number}.";

pub const LABELS_SYSTEM: &str = "You label photos. Answer with strict JSON only: {\"scene\": one \
of scene.product, scene.food, scene.people, scene.animals, scene.document, scene.screenshot, \
scene.other; \"attributes\": {\"attr.has_person\": bool, \"attr.has_animal\": bool, \
\"attr.is_document\": bool, \"attr.is_screenshot\": bool}; \"objects\": list of object labels \
such as object.food or object.electronics.laptop, most likely first}.";

pub const LABELS_USER: &str = "Label this photo.";
