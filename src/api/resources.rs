//! The resource table. (Being written.)
