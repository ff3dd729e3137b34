//! Values stored as text in a column of `app_minutes` and `app_hours` and merged in Rust
//! (an app's requests, its scraped values): a second report of a minute is added to the
//! stored value in the same transaction, and minutes rolled into their hour likewise. Each
//! store reads and writes the column; what a merge does is here.

use std::collections::HashMap;

/// A value kept in column [`Merged::COLUMN`] of `app_minutes` and `app_hours`.
pub(in crate::store) trait Merged: Sized {
    /// The column, in both tables.
    const COLUMN: &'static str;
    /// The stored text; `None` for `NULL` or text this version cannot read.
    fn decode(text: Option<&str>) -> Option<Self>;
    fn encode(&self) -> String;
    /// Adds `older`, the value stored (or earlier) for the same row, to this newer one:
    /// of the same minute, or (`across_minutes`) of another minute of the same hour.
    fn absorb(&mut self, older: &Self, across_minutes: bool);
}

/// Adds to `rows` (keyed by app, host and time; the newer values) the older values
/// `stored` holds for the same keys, so that writing them back keeps both.
pub(in crate::store) fn absorb_stored<T: Merged>(
    rows: &mut HashMap<(&str, &str, i64), T>,
    mut stored: HashMap<(String, String, i64), T>,
    across_minutes: bool,
) {
    if stored.is_empty() {
        return;
    }
    for ((app, host, t), new) in rows.iter_mut() {
        if let Some(old) = stored.remove(&((*app).to_owned(), (*host).to_owned(), *t)) {
            new.absorb(&old, across_minutes);
        }
    }
}

/// The values of `app` on `host` in `minutes` (oldest first, as stored), added up per
/// hour; values this version cannot read are left out.
pub(in crate::store) fn fold_into_hours<'a, T: Merged>(
    app: &'a str,
    host: &'a str,
    minutes: impl IntoIterator<Item = (i64, Option<String>)>,
) -> HashMap<(&'a str, &'a str, i64), T> {
    let mut hours: HashMap<(&str, &str, i64), T> = HashMap::new();
    for (minute, text) in minutes {
        let Some(mut value) = T::decode(text.as_deref()) else {
            continue;
        };
        let key = (app, host, super::hour_of(minute));
        if let Some(earlier) = hours.remove(&key) {
            value.absorb(&earlier, true);
        }
        hours.insert(key, value);
    }
    hours
}
