//! One object to apply and what applying it changes, field by field (a Secret's values never
//! shown).

use serde::Serialize;
use serde_json::Value;

use crate::flux::{Kind, is_subset};

/// A field that differs: its path (`spec.ref.branch`), the live value and the one wanted.
/// Values of a Secret are never held, only whether they are set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: String,
}

/// What applying an object changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change", content = "fields")]
pub enum Change {
    Unchanged,
    Create,
    Update(Vec<FieldChange>),
}

impl Change {
    pub fn is_write(&self) -> bool {
        *self != Change::Unchanged
    }
}

/// One object to apply, and what that changes.
#[derive(Clone)]
pub struct Object {
    pub kind: Kind,
    pub desired: Value,
    pub change: Change,
}

/// An object as JSON for `Debug`, with the values of a Secret's `data` and `stringData` shown
/// as `(secret)`: they hold the token, the deploy key or the age identity (base64 or plain),
/// and `Debug` output never shows those (SPEC §1).
pub(super) struct Masked<'a>(pub(super) &'a Value);

impl std::fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        for field in ["data", "stringData"] {
            if let Some(Value::Object(values)) = shown.get_mut(field) {
                values
                    .values_mut()
                    .for_each(|v| *v = Value::from("(secret)"));
            }
        }
        write!(f, "{shown}")
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("kind", &self.kind)
            .field("desired", &Masked(&self.desired))
            .field("change", &self.change)
            .finish()
    }
}

impl Object {
    pub(super) fn new(kind: Kind, desired: Value, live: Option<&Value>) -> Object {
        let change = match live {
            None => Change::Create,
            Some(live) if is_subset(&desired, live) => Change::Unchanged,
            Some(live) => Change::Update(diff(&desired, live, kind == Kind::Secret)),
        };
        Object {
            kind,
            desired,
            change,
        }
    }

    /// `namespace/name`, or `name` for a cluster-wide object.
    pub fn name(&self) -> String {
        let m = &self.desired["metadata"];
        let name = m["name"].as_str().unwrap_or_default();
        match m["namespace"].as_str() {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        }
    }
}

/// The fields of `desired` that `live` does not hold as wanted, in order. A Secret's values are
/// not shown, only that they change.
pub(super) fn diff(desired: &Value, live: &Value, secret: bool) -> Vec<FieldChange> {
    fn walk(path: &str, d: &Value, l: Option<&Value>, secret: bool, out: &mut Vec<FieldChange>) {
        if let (Value::Object(dm), Some(Value::Object(lm))) = (d, l) {
            for (k, v) in dm {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, v, lm.get(k), secret, out);
            }
            return;
        }
        if l.is_some_and(|l| is_subset(d, l)) {
            return;
        }
        let show = |v: &Value| match v {
            _ if secret && path.starts_with("data") => "(secret)".to_string(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        out.push(FieldChange {
            field: path.to_string(),
            old: l.filter(|l| !l.is_null()).map(show),
            new: show(d),
        });
    }
    let mut out = Vec::new();
    walk("", desired, Some(live), secret, &mut out);
    out
}
