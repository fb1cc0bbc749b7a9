//go:build vault

// Package vault holds the integration tests of the outside-root upstreams
// against real servers on 127.0.0.1: HashiCorp Vault (dev mode, and a
// file-storage server for the restart case) and smallstep step-ca.
package vault
