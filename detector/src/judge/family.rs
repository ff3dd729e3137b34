//! Which fingerprints are one failure, from their definitions (DESIGN §3, README "One
//! failure, several shapes").
//!
//! - **Same definition.** Two fingerprints whose definitions have the same `class`,
//!   `causes` and `frames` are the same failure from the same code: the agent's fingerprint
//!   is a hash of exactly those, so within one algorithm version they are one fingerprint;
//!   across versions (an agent upgrade from fingerprint version 1 to 2) they are the same
//!   failure under two names. The judge counts them as one *shape*: known when any of them
//!   is known, their counts summed.
//! - **Family.** Two fingerprints whose definitions have the same `class` and `causes` are
//!   one family; a definition without `frames` is the family's *frameless* shape (HotSpot's
//!   fast throw, `-XX:+OmitStackTraceInFastThrow`) and stands for the whole family. Rules 1
//!   (dangerous) and 2 (new) do not fire for a shape whose family has a frameless member
//!   known (in a baseline, on the reference hosts or in the app's history), nor for a
//!   frameless shape any member of whose family is known. The counts of a family with a
//!   frameless member seen in the judged windows are compared per family, summed over its
//!   fingerprints: how a host splits them between the shapes depends on its JIT's warm-up,
//!   not on the release.
//!
//! Fingerprints without a definition (or with an empty class) are related to nothing.

use std::collections::{HashMap, HashSet};

use super::{Definition, Fingerprint};

/// `(class, causes)`: the family of a definition.
type FamilyKey<'a> = (&'a str, &'a [String]);
/// `(class, causes, frames)`: the shape of a definition.
type ShapeKey<'a> = (&'a str, &'a [String], &'a [String]);

fn family_key(d: &Definition) -> FamilyKey<'_> {
    (d.class.as_str(), d.causes.as_slice())
}

fn shape_key(d: &Definition) -> ShapeKey<'_> {
    (d.class.as_str(), d.causes.as_slice(), d.frames.as_slice())
}

/// The definition of `fp` when it can relate it to others (a non-empty class).
fn usable(definitions: &HashMap<Fingerprint, Definition>, fp: Fingerprint) -> Option<&Definition> {
    definitions.get(&fp).filter(|d| !d.class.is_empty())
}

/// How the fingerprints seen in a round's windows group.
#[derive(Debug, Default)]
pub(crate) struct Grouping {
    /// Fingerprint → its shape's representative (the smallest fingerprint of the shape
    /// seen). Only fingerprints whose representative is another one are listed.
    shape: HashMap<Fingerprint, Fingerprint>,
    /// Fingerprint → its counting key: the family's representative (its smallest frameless
    /// fingerprint seen) when the family has a frameless member in the windows, else its
    /// shape's representative. Only fingerprints whose key is another one are listed.
    key: HashMap<Fingerprint, Fingerprint>,
    /// Counting keys that stand for a family (frameless and full shapes summed).
    families: HashSet<Fingerprint>,
}

impl Grouping {
    /// Groups `seen` (the fingerprints with counts in the judged windows).
    pub fn new(
        definitions: &HashMap<Fingerprint, Definition>,
        seen: impl IntoIterator<Item = Fingerprint>,
    ) -> Self {
        let mut seen: Vec<Fingerprint> = seen.into_iter().collect();
        seen.sort_unstable();
        seen.dedup();
        let mut shape_rep: HashMap<ShapeKey<'_>, Fingerprint> = HashMap::new();
        let mut frameless_rep: HashMap<FamilyKey<'_>, Fingerprint> = HashMap::new();
        for &fp in &seen {
            if let Some(d) = usable(definitions, fp) {
                shape_rep.entry(shape_key(d)).or_insert(fp);
                if d.frames.is_empty() {
                    frameless_rep.entry(family_key(d)).or_insert(fp);
                }
            }
        }
        let mut out = Self::default();
        for &fp in &seen {
            let Some(d) = usable(definitions, fp) else {
                continue;
            };
            let shape = shape_rep[&shape_key(d)];
            if shape != fp {
                out.shape.insert(fp, shape);
            }
            let key = match frameless_rep.get(&family_key(d)) {
                Some(&family) => {
                    out.families.insert(family);
                    family
                }
                None => shape,
            };
            if key != fp {
                out.key.insert(fp, key);
            }
        }
        // A family key whose only member is its frameless fingerprint is a plain shape.
        let merged: HashSet<Fingerprint> = out.key.values().copied().collect();
        out.families.retain(|f| merged.contains(f));
        out
    }

    /// The shape representative of `fp`.
    pub fn shape_of(&self, fp: Fingerprint) -> Fingerprint {
        self.shape.get(&fp).copied().unwrap_or(fp)
    }

    /// The counting key of `fp`.
    pub fn key_of(&self, fp: Fingerprint) -> Fingerprint {
        self.key.get(&fp).copied().unwrap_or(fp)
    }

    /// Whether the counting key `key` sums a family's shapes.
    pub fn is_family(&self, key: Fingerprint) -> bool {
        self.families.contains(&key)
    }
}

/// For each definition of `targets`, whether the judge may treat it as a known failure
/// although its own fingerprint is unknown: a fingerprint with the same definition is
/// known, or its family's frameless shape is known, or (for a frameless target) any member
/// of its family is known. `known` says whether a fingerprint is known (baseline, reference
/// hosts, the app's history). One pass over `definitions`.
pub(crate) fn covered<'a>(
    definitions: &HashMap<Fingerprint, Definition>,
    targets: impl IntoIterator<Item = &'a Definition>,
    known: impl Fn(Fingerprint) -> bool,
) -> Vec<bool> {
    #[derive(Default, Clone, Copy)]
    struct Family {
        any_known: bool,
        frameless_known: bool,
    }
    let targets: Vec<&Definition> = targets.into_iter().collect();
    let mut families: HashMap<FamilyKey<'_>, Family> = targets
        .iter()
        .filter(|d| !d.class.is_empty())
        .map(|d| (family_key(d), Family::default()))
        .collect();
    let mut shapes_known: HashSet<ShapeKey<'_>> = HashSet::new();
    if !families.is_empty() {
        for (&fp, d) in definitions {
            if d.class.is_empty() {
                continue;
            }
            let Some(family) = families.get_mut(&family_key(d)) else {
                continue;
            };
            if !known(fp) {
                continue;
            }
            family.any_known = true;
            if d.frames.is_empty() {
                family.frameless_known = true;
            }
            shapes_known.insert(shape_key(d));
        }
    }
    targets
        .iter()
        .map(|d| {
            let Some(family) = families.get(&family_key(d)) else {
                return false;
            };
            shapes_known.contains(&shape_key(d))
                || if d.frames.is_empty() {
                    family.any_known
                } else {
                    family.frameless_known
                }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(class: &str, causes: &[&str], frames: &[&str]) -> Definition {
        Definition {
            class: class.into(),
            causes: causes.iter().map(|s| s.to_string()).collect(),
            frames: frames.iter().map(|s| s.to_string()).collect(),
            ..Definition::default()
        }
    }

    const NPE: &str = "java.lang.NullPointerException";

    #[test]
    fn grouping_sums_a_family_only_with_its_frameless_shape_seen() {
        let defs = HashMap::from([
            (10, def(NPE, &[], &[])),
            (20, def(NPE, &[], &["a.B.c"])),
            (30, def(NPE, &[], &["a.B.d"])),
            (40, def(NPE, &["x.Y"], &[])),
            (50, def("java.lang.IllegalStateException", &[], &["a.B.c"])),
            (60, def(NPE, &[], &["a.B.c"])), // version 1 of 20
        ]);
        let g = Grouping::new(&defs, [20, 30, 50, 60, 99]);
        assert_eq!(g.shape_of(60), 20, "same definition, one shape");
        assert_eq!(g.key_of(30), 30, "no frameless member seen: per shape");
        assert_eq!(g.key_of(60), 20);
        assert!(!g.is_family(20));
        let g = Grouping::new(&defs, [10, 20, 30, 40, 50, 60, 99]);
        for fp in [10, 20, 30, 60] {
            assert_eq!(g.key_of(fp), 10, "{fp}");
        }
        assert!(g.is_family(10));
        assert_eq!(g.shape_of(30), 30);
        assert_eq!(g.key_of(40), 40, "another cause chain, another family");
        assert!(!g.is_family(40), "alone in its family");
        assert_eq!(g.key_of(50), 50);
        assert_eq!(g.key_of(99), 99, "no definition");
    }

    #[test]
    fn covered_follows_the_agreed_rule() {
        let defs = HashMap::from([
            (10, def(NPE, &[], &[])),
            (20, def(NPE, &[], &["a.B.c"])),
            (30, def("java.lang.ClassCastException", &[], &["a.B.c"])),
            (40, def("", &[], &[])),
        ]);
        let full_new_site = def(NPE, &[], &["a.B.zz"]);
        let frameless_npe = def(NPE, &[], &[]);
        let cce_frameless = def("java.lang.ClassCastException", &[], &[]);
        let cce_other_site = def("java.lang.ClassCastException", &[], &["q.R.s"]);
        let wrapped = def(NPE, &["x.Y"], &[]);
        let v1_of_20 = def(NPE, &[], &["a.B.c"]);
        let nothing = Definition::default();
        let targets = [
            &full_new_site,
            &frameless_npe,
            &cce_frameless,
            &cce_other_site,
            &wrapped,
            &v1_of_20,
            &nothing,
        ];
        // Only the frameless NPE is known: every NPE without causes is covered.
        let c = covered(&defs, targets, |fp| fp == 10);
        assert_eq!(c, [true, true, false, false, false, true, false]);
        // Only a full NPE trace is known: a new site is not, the frameless shape is, and
        // the same definition under another fingerprint is.
        let c = covered(&defs, targets, |fp| fp == 20);
        assert_eq!(c, [false, true, false, false, false, true, false]);
        // A full ClassCastException known: a frameless one is covered, another site not.
        let c = covered(&defs, targets, |fp| fp == 30);
        assert_eq!(c, [false, false, true, false, false, false, false]);
        // Definitions without a class relate nothing.
        let c = covered(&defs, targets, |fp| fp == 40);
        assert!(c.iter().all(|&x| !x));
    }
}
