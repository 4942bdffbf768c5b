//! Package transfer (being written).
