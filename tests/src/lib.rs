//! End-to-end tests across real appliance processes and real PKCS#11 clients.
//!
//! Nothing here yet: the end-to-end tests arrive with the appliance. The threshold and wire
//! crates carry their own unit, property and vector tests.
