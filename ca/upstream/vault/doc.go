// Package vault is an upstream.Authority backed by HashiCorp Vault's PKI
// secrets engine.
//
// Each CA replica makes its intermediate key in-process and sends only a
// CSR to Vault's sign-intermediate endpoint (<mount>/root/sign-intermediate,
// or <mount>/issuer/<ref>/sign-intermediate when an issuer is named); the
// chain up to Vault's root comes back with the certificate. Vault never
// signs leaves and never sees a key, so leaf issuance carries on through a
// Vault outage until the intermediate nears expiry (ca.Authority retries
// the renewal with backoff meanwhile).
//
// The trust bundle is Vault's root: the roots of a configured bundle file,
// or else the self-signed certificates of the mount's CA chain, read once
// and pinned for the process lifetime. Every certificate Vault returns is
// checked with upstream.CheckMinted against those roots before use.
//
// Vault is reached only through github.com/hashicorp/vault/api. Auth
// methods: a token (from a file or an environment variable), AppRole, and
// Kubernetes (the CA's projected service-account token, re-read from its
// file on every login). Run keeps the login alive with the api's
// LifetimeWatcher and logs in again when a renewal is refused.
package vault
