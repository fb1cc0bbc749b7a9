// Package upstream is where a Lanyard CA replica's intermediate comes from.
//
// Each replica generates its own intermediate key and asks an Authority
// to sign it (MintX509CA) as a CA:true, pathlen:0 certificate whose
// lifetime never passes the signer's. The Authority also gives the trust
// bundle (Bundle). It never signs leaves and never sees a replica's key.
//
// Implementations:
//
//   - SelfSigned: a root generated on first start and kept in a directory
//     (root.pem 0644, root-key.pem 0600), reloaded on every later start.
//     The default for a single node.
//   - Disk: an operator's CA on disk, either a root, or an intermediate
//     (with its chain) plus a bundle file of roots it must chain to.
//   - vault.Upstream (package ca/upstream/vault): Vault PKI
//     sign-intermediate, for a root kept in HashiCorp Vault.
//
// The cmd/ wiring picks one with a switch on the configuration.
package upstream
