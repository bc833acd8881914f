//! lmtpd: being written (issue 3).
