//! Catalog items and their validation.
//!
//! Field names follow Segment's e-commerce spec (`image_url`, `url`), so a product
//! object from a `Product Viewed` event is a valid item as it is; `name` is accepted for
//! `title` for the same reason.

use crate::RecsError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const MAX_ID_LEN: usize = 200;
pub const MAX_TEXT_LEN: usize = 1000;
pub const MAX_TAGS: usize = 64;
pub const MAX_URL_LEN: usize = 2048;

/// One product of the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default = "yes")]
    pub in_stock: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

fn yes() -> bool {
    true
}

fn text(
    obj: &Map<String, Value>,
    field: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, RecsError> {
    match obj.get(field) {
        None | Some(Value::Null) if required => Err(RecsError::invalid(field, "is required")),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() && required {
                return Err(RecsError::invalid(field, "must not be empty"));
            }
            if s.chars().count() > max {
                return Err(RecsError::invalid(
                    field,
                    format!("is longer than {max} characters"),
                ));
            }
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Some(_) => Err(RecsError::invalid(field, "must be a string")),
    }
}

/// Checks an item id (path segment or `id` field).
pub fn validate_id(id: &str) -> Result<(), RecsError> {
    if id.is_empty() {
        return Err(RecsError::invalid("id", "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(RecsError::invalid(
            "id",
            format!("is longer than {MAX_ID_LEN} bytes"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(RecsError::invalid(
            "id",
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn url(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, RecsError> {
    let Some(u) = text(obj, field, MAX_URL_LEN, false)? else {
        return Ok(None);
    };
    if !(u.starts_with("https://") || u.starts_with("http://")) {
        return Err(RecsError::invalid(field, "must be an http(s) URL"));
    }
    Ok(Some(u))
}

/// The fields a catalog item may have (anything else is refused, naming these).
pub const FIELDS: &[&str] = &[
    "id",
    "product_id",
    "title",
    "name",
    "category",
    "brand",
    "price",
    "tags",
    "in_stock",
    "image_url",
    "url",
];

impl Item {
    /// Validates an item from JSON. `id` is the id from the path (or `None` to take it from
    /// the body's `id` / `product_id`); a body id that differs from the path's is an error.
    pub fn from_json(id: Option<&str>, body: &Value) -> Result<Self, RecsError> {
        let Value::Object(obj) = body else {
            return Err(RecsError::invalid("body", "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(RecsError::invalid(
                unknown.as_str(),
                format!(
                    "is not an item field (expected one of {})",
                    FIELDS.join(", ")
                ),
            ));
        }
        let body_id = match (obj.get("id"), obj.get("product_id")) {
            (Some(v), _) | (None, Some(v)) => match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => return Err(RecsError::invalid("id", "must be a string")),
            },
            (None, None) => None,
        };
        let id = match (id, body_id) {
            (Some(p), Some(b)) if p != b => {
                return Err(RecsError::invalid(
                    "id",
                    format!("{b:?} differs from the id in the path {p:?}"),
                ))
            }
            (Some(p), _) => p.to_string(),
            (None, Some(b)) => b,
            (None, None) => return Err(RecsError::invalid("id", "is required")),
        };
        validate_id(&id)?;
        let title = match text(obj, "title", MAX_TEXT_LEN, false)? {
            Some(t) => t,
            None => text(obj, "name", MAX_TEXT_LEN, false)?
                .ok_or_else(|| RecsError::invalid("title", "is required"))?,
        };
        let price = match obj.get("price") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                let p = n.as_f64().unwrap_or(f64::NAN);
                if !p.is_finite() || p < 0.0 {
                    return Err(RecsError::invalid("price", "must be a number >= 0"));
                }
                Some(p)
            }
            Some(_) => return Err(RecsError::invalid("price", "must be a number")),
        };
        let tags = match obj.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => {
                if a.len() > MAX_TAGS {
                    return Err(RecsError::invalid(
                        "tags",
                        format!("has more than {MAX_TAGS} tags"),
                    ));
                }
                let mut tags = Vec::with_capacity(a.len());
                for (i, t) in a.iter().enumerate() {
                    match t {
                        Value::String(s) if !s.trim().is_empty() && s.len() <= 100 => {
                            tags.push(s.trim().to_string())
                        }
                        _ => {
                            return Err(RecsError::invalid(
                                format!("tags[{i}]"),
                                "must be a non-empty string of at most 100 bytes",
                            ))
                        }
                    }
                }
                tags.sort();
                tags.dedup();
                tags
            }
            Some(_) => return Err(RecsError::invalid("tags", "must be an array of strings")),
        };
        let in_stock = match obj.get("in_stock") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(RecsError::invalid("in_stock", "must be true or false")),
        };
        Ok(Self {
            id,
            title,
            category: text(obj, "category", MAX_TEXT_LEN, false)?,
            brand: text(obj, "brand", MAX_TEXT_LEN, false)?,
            price,
            tags,
            in_stock,
            image_url: url(obj, "image_url")?,
            url: url(obj, "url")?,
        })
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The item's price band: a factor of about 1.6 per band, so items a shopper would
    /// compare share a band and an accessory does not share one with the device.
    pub fn price_band(&self) -> Option<i32> {
        self.price
            .filter(|p| *p > 0.0)
            .map(|p| (p.ln() / 0.5).floor() as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(id: Option<&str>, v: Value) -> String {
        match Item::from_json(id, &v) {
            Err(RecsError::Invalid { field, .. }) => field,
            Ok(i) => panic!("accepted {i:?}"),
        }
    }

    #[test]
    fn valid_item_round_trips() {
        let v = json!({"title": " Lens ", "category": "Cameras", "brand": "Acme", "price": 120.5,
            "tags": ["b", "a", "a"], "image_url": "https://x/y.png"});
        let item = Item::from_json(Some("sku-1"), &v).expect("valid");
        assert_eq!(item.title, "Lens");
        assert_eq!(item.tags, vec!["a", "b"]);
        assert!(item.in_stock);
        let back = Item::from_json(None, &item.to_json()).expect("round trip");
        assert_eq!(back, item);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(Some("a"), json!({})), "title");
        assert_eq!(err(Some("a"), json!({"title": "t", "price": -1})), "price");
        assert_eq!(err(Some("a"), json!({"title": "t", "price": "9"})), "price");
        assert_eq!(
            err(Some("a"), json!({"title": "t", "tags": [1]})),
            "tags[0]"
        );
        assert_eq!(
            err(Some("a"), json!({"title": "t", "in_stock": "no"})),
            "in_stock"
        );
        assert_eq!(
            err(Some("a"), json!({"title": "t", "image_url": "ftp://x"})),
            "image_url"
        );
        assert_eq!(
            err(Some("a"), json!({"title": "t", "colour": "red"})),
            "colour"
        );
        assert_eq!(err(Some("a"), json!({"title": "t", "id": "b"})), "id");
        assert_eq!(err(None, json!({"title": "t"})), "id");
        assert_eq!(err(Some(""), json!({"title": "t"})), "id");
        assert_eq!(err(Some("a"), json!([1])), "body");
    }

    #[test]
    fn segment_product_objects_are_items() {
        let v = json!({"product_id": "p1", "name": "Tent", "price": 99, "category": "Outdoor"});
        let item = Item::from_json(None, &v).expect("valid");
        assert_eq!((item.id.as_str(), item.title.as_str()), ("p1", "Tent"));
    }

    #[test]
    fn price_bands_separate_accessories_from_devices() {
        let band = |p: f64| {
            Item::from_json(Some("x"), &json!({"title": "t", "price": p}))
                .expect("valid")
                .price_band()
        };
        assert_eq!(band(100.0), band(120.0));
        assert_ne!(band(10.0), band(100.0));
        assert_eq!(band(0.0), None);
    }
}
