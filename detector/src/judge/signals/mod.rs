//! The funnel's signals, a module each (see the module docs of `judge`).

pub(crate) mod collapse;
pub(crate) mod exceptions;
pub(crate) mod host_metric;
pub(crate) mod rate;
pub(crate) mod volume;
