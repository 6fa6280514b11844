//! The embedded SQLite backend of [`super::Store`]. (Being written.)
