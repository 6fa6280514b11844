//! The cluster token (`K10<sha256 of CA>::server:<secret>`). (Being written.)
