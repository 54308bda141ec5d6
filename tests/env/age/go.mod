// Wrapper module that builds age-keygen v1.3.2 for the tests (see tests/env/setup): Debian's age
// (1.1.1) has no `-pq`, and the tests check homelab-flux's derivation of post-quantum recipients
// against `age-keygen -y`. Nothing here is imported by the Rust code.
module homelab-flux/testenv/age

go 1.26.0

require (
	filippo.io/age v1.3.2 // indirect
	filippo.io/hpke v0.4.0 // indirect
	golang.org/x/crypto v0.55.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/term v0.45.0 // indirect
)

tool filippo.io/age/cmd/age-keygen
