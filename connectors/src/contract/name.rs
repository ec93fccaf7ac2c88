//! Names of configured things (functions, triggers), interned for the life of the process.

use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Mutex, OnceLock, PoisonError};

/// A function or trigger name, interned: copying one is free, and two are equal when they are
/// the same interned string.
///
/// Every invocation carries its function's and trigger's names. As `Arc<str>`s, each invocation
/// updated two reference counts that every worker thread shares, which moved a cache line
/// between cores per event.
///
/// Intern only configured names (and fixed ones such as `invoke`): each distinct name is kept
/// until the process exits, so the set must stay bounded by the configuration.
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
pub struct Name(&'static str);

/// Interned, so one pointer comparison: equal strings are the same string.
impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

/// By content, which agrees with the pointer equality above because names are interned.
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Name {
    /// The interned `name`; the first call for a name stores it, later ones find it.
    pub fn new(name: &str) -> Self {
        static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Mutex::default)
            .lock()
            // The set is only ever inserted into whole: a panic elsewhere leaves it valid.
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(interned) = names.get(name) {
            return Self(interned);
        }
        let interned: &'static str = Box::leak(Box::from(name));
        names.insert(interned);
        Self(interned)
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    #[test]
    fn one_name_is_interned_once() {
        let a = Name::new("orders");
        let b = Name::new(&String::from("orders"));
        assert_eq!(a, b);
        assert!(
            std::ptr::eq(a.as_str(), b.as_str()),
            "the same interned string"
        );
        assert_ne!(a, Name::new("payments"));
        assert_eq!(a, "orders");
        assert_eq!(a.to_string(), "orders");
        assert_eq!(format!("{a:?}"), "\"orders\"");
    }
}
