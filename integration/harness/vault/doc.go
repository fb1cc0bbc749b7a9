//go:build vault

// Package vault starts a real HashiCorp Vault server on 127.0.0.1 for the
// integration tests: in dev mode (in-memory, unsealed, a known root token)
// or, with Options.Persistent, a file-storage server that is initialised
// with one unseal key and keeps its state across Restart.
//
// The binary is .cache/bin/vault of the repository (built by `make
// vault-tools` from tools/vault), or $LANYARD_VAULT_BIN.
package vault
