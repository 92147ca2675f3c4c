//! The project test bed.
