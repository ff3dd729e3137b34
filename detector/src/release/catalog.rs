//! What a round, an alert or a replay case needs of an app's fingerprints, read from the
//! store in pieces bounded by what it looks at, never all of the app's fingerprints (an
//! app that mints fingerprints without end would otherwise grow every round's memory):
//!
//! - the definitions of the fingerprints it looks at, read by id;
//! - which of those the app showed before the release (first seen before its first
//!   batch): known by id;
//! - for the class chains (class and causes) of those not known by id, one fingerprint
//!   per stack shape of the chain first seen before the release, at most
//!   [`MAX_KNOWN_SHAPES`]: what the judge needs to tell whether an unknown fingerprint
//!   is a known failure under another name (the same shape, or its family's frameless
//!   shape; see `judge::family`).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{ReleaseError, Releases, definition_of};
use crate::judge::{Definition, Fingerprint};
use crate::replay::parse_fingerprint;
use crate::store::Store;

/// Stack shapes of the class chains a round looks at, known before the release, that it
/// reads at most (the most recently seen first). An app past it in one round has more
/// distinct known stacks for its new exceptions' classes than anyone reads; a shape left
/// unread makes a fingerprint of that shape look new.
pub const MAX_KNOWN_SHAPES: usize = 4_096;

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
        let mut chains: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
        for f in self.store.fingerprints(app, &ids).await? {
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
            if !known {
                chains.insert((f.class.clone(), f.causes.clone()));
            }
            catalog.definitions.insert(fp, definition_of(&f));
        }
        if chains.is_empty() {
            return Ok(catalog);
        }
        let chains: Vec<(String, Vec<String>)> = chains.into_iter().collect();
        let shapes = self
            .store
            .shapes_before(app, &chains, first, MAX_KNOWN_SHAPES)
            .await?;
        if shapes.len() >= MAX_KNOWN_SHAPES {
            tracing::warn!(
                app,
                shapes = shapes.len(),
                "known stack shapes of a round's class chains read up to their bound"
            );
        }
        for f in shapes {
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
