//! service-runtime: being written (issue 3).
