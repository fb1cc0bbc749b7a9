// Package serving keeps the CA's own TLS serving certificate: issued by
// this replica's intermediate through the issuing pipeline (recorded like
// any other), for spiffe://<td>/lanyard/ca plus the configured DNS names
// and IPs, so that clients trust it through the published bundle alone. It
// is renewed at half-life and whenever the active intermediate changes.
package serving
