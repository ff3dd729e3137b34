//! What a round, an alert or a replay case needs of an app's fingerprints, read from the
//! store in pieces bounded by what it looks at, never all of the app's fingerprints (an
//! app that mints fingerprints without end would otherwise grow every round's memory and
//! the judge state stored after it):
//!
//! - the definitions of the fingerprints it looks at, read by id, without sample traces;
//! - which of those the app showed before the release (first seen before its first
//!   batch): known by id. Read afresh each round, so a late report of a minute before the
//!   release makes a fingerprint known from the next round on;
//! - for each of the others, the known members (first seen before the release) that tell
//!   whether it is a known failure under another name (see `judge::family`): one of its
//!   stack shape, one of its class chain, and one frameless one of its class chain. Those
//!   three answer exactly what the judge asks of the app's history, with at most three
//!   fingerprints each, however many the chain has.
//!
//! The caller adds the fingerprints the app's memory learned (from feedback on another
//! release) since the release started, so that they stand for their families as well.
//! What is not read: fingerprints users called benign that are neither in the window nor
//! first seen before the release (up to 4,096 an app), which count as known by id but not
//! for their families.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{ReleaseError, Releases, definition_of};
use crate::judge::{Definition, Fingerprint};
use crate::replay::parse_fingerprint;
use crate::store::{Shape, Store};

/// Fingerprints known before a release and definitions, for one round or alert.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub(crate) known: HashSet<Fingerprint>,
    pub(crate) definitions: HashMap<Fingerprint, Definition>,
}

impl<S: Store> Releases<S> {
    /// What the judge needs of `app`'s fingerprints to judge `ids` in a release whose
    /// first batch is at `first`.
    pub(crate) async fn catalog(
        &self,
        app: &str,
        first: i64,
        ids: impl IntoIterator<Item = Fingerprint>,
    ) -> Result<Catalog, ReleaseError> {
        let ids: Vec<Fingerprint> = ids
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut catalog = Catalog::default();
        if ids.is_empty() {
            return Ok(catalog);
        }
        let mut unknown: Vec<Definition> = Vec::new();
        for f in self.store.fingerprints(app, &ids, false).await? {
            let Ok(fp) = parse_fingerprint(&f.fingerprint) else {
                continue;
            };
            let known = f.first_seen.is_some_and(|s| s < first);
            if known {
                catalog.known.insert(fp);
            }
            if f.class.is_empty() {
                continue;
            }
            let definition = definition_of(&f);
            if !known {
                unknown.push(definition.clone());
            }
            catalog.definitions.insert(fp, definition);
        }
        if unknown.is_empty() {
            return Ok(catalog);
        }
        // Each unknown one's class chain, and its stack shape.
        let mut asked: BTreeSet<Shape<'_>> = BTreeSet::new();
        for d in &unknown {
            asked.insert((&d.class, &d.causes, None));
            asked.insert((&d.class, &d.causes, Some(&d.frames)));
        }
        let asked: Vec<Shape<'_>> = asked.into_iter().collect();
        for f in self.store.known_members(app, first, &asked).await? {
            if let Ok(fp) = parse_fingerprint(&f.fingerprint) {
                catalog.known.insert(fp);
                catalog
                    .definitions
                    .entry(fp)
                    .or_insert_with(|| definition_of(&f));
            }
        }
        Ok(catalog)
    }
}
