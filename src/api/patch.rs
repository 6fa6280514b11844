//! JSON patch and merge patch. (Being written.)
