package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
)

const (
	// maxDocumentSize bounds a fetched discovery document or key set.
	maxDocumentSize = 1 << 20
	// maxRedirects bounds the same-host redirects a fetch follows.
	maxRedirects = 3
	// wellKnownOIDC is the OIDC discovery path.
	wellKnownOIDC = "/.well-known/openid-configuration"
)

// errCrossHostRedirect is returned (wrapped) when a server redirects a
// fetch to another host.
var errCrossHostRedirect = errors.New("redirect to another host refused")

// fetchClient returns a copy of c (or a default client) that follows only
// same-host redirects that do not downgrade from https. The key set bounds
// each fetch with its own timeout (JWKSConfig.FetchTimeout).
func fetchClient(c *http.Client) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	}
	next := out.CheckRedirect
	out.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		orig := via[0].URL
		if !strings.EqualFold(req.URL.Host, orig.Host) {
			return fmt.Errorf("%w: %s to %s", errCrossHostRedirect, orig.Host, req.URL.Host)
		}
		if orig.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w: https to %s", errCrossHostRedirect, req.URL.Scheme)
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
	return &out
}

// Accept headers. kube-apiserver serves its key set only as
// application/jwk-set+json and answers 406 to "Accept: application/json".
const (
	acceptJSON = "application/json"
	acceptJWKS = "application/jwk-set+json, application/json;q=0.9"
)

// httpGet fetches u and returns at most maxDocumentSize bytes of a 200
// response.
func httpGet(ctx context.Context, c *http.Client, u, accept string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	req.Header.Set("Accept", accept)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err // a *url.Error, which names the method and url
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("get %s: status %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("get %s: read body: %w", u, err)
	}
	if len(body) > maxDocumentSize {
		return nil, fmt.Errorf("get %s: body larger than %d bytes", u, maxDocumentSize)
	}
	return body, nil
}

// httpSource fetches a key set from a JWKS URL.
func httpSource(c *http.Client, jwksURL string) keySource {
	return func(ctx context.Context) ([]byte, error) {
		return httpGet(ctx, c, jwksURL, acceptJWKS)
	}
}

// discoverySource fetches the OIDC discovery document, checks its issuer
// and fetches the key set its jwks_uri names. The jwks_uri must be on the
// discovery document's host or one of allowedHosts.
func discoverySource(c *http.Client, discoveryURL, issuer string, allowedHosts []string) keySource {
	return func(ctx context.Context) ([]byte, error) {
		raw, err := httpGet(ctx, c, discoveryURL, acceptJSON)
		if err != nil {
			return nil, fmt.Errorf("oidc discovery: %w", err)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("oidc discovery: parse: %w", err)
		}
		if doc.Issuer != issuer {
			return nil, fmt.Errorf("oidc discovery: issuer %.200q is not the configured issuer", doc.Issuer)
		}
		jwksURL, err := checkJWKSURI(discoveryURL, doc.JWKSURI, allowedHosts)
		if err != nil {
			return nil, fmt.Errorf("oidc discovery: %w", err)
		}
		return httpGet(ctx, c, jwksURL, acceptJWKS)
	}
}

// errCrossHostJWKS is returned (wrapped) when a discovery document names a
// jwks_uri on a host that is neither its own nor allowed in the config: a
// document that can be tampered with must not choose where trust comes
// from.
var errCrossHostJWKS = errors.New("jwks_uri on another host refused")

// checkJWKSURI accepts an absolute jwks_uri that is https, or http when the
// discovery document itself was fetched over http (tests, local clusters),
// on the discovery document's host (host and port) or one of allowedHosts.
func checkJWKSURI(discoveryURL, jwksURI string, allowedHosts []string) (string, error) {
	if jwksURI == "" {
		return "", errors.New("no jwks_uri")
	}
	u, err := url.Parse(jwksURI)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("jwks_uri %.200q is not an absolute url", jwksURI)
	}
	d, _ := url.Parse(discoveryURL) // validated in NewJWKSVerifier
	if u.Scheme != "https" && (u.Scheme != "http" || d.Scheme != "http") {
		return "", fmt.Errorf("jwks_uri scheme %q not allowed", u.Scheme)
	}
	if !strings.EqualFold(u.Host, d.Host) && !slices.ContainsFunc(allowedHosts, func(h string) bool {
		return strings.EqualFold(h, u.Host)
	}) {
		return "", fmt.Errorf("%w: %.200q (discovery on %q; allow it with jwksHosts)", errCrossHostJWKS, u.Host, d.Host)
	}
	return u.String(), nil
}

// fileSource reads a key set from a local file on every fetch, so that a
// rewritten file is picked up.
func fileSource(path string) keySource {
	return func(context.Context) ([]byte, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read key set: %w", err)
		}
		defer f.Close()
		body, err := io.ReadAll(io.LimitReader(f, maxDocumentSize+1))
		if err != nil {
			return nil, fmt.Errorf("read key set: %w", err)
		}
		if len(body) > maxDocumentSize {
			return nil, fmt.Errorf("read key set: file larger than %d bytes", maxDocumentSize)
		}
		return body, nil
	}
}

// staticSource returns the same key set every time.
func staticSource(raw []byte) keySource {
	raw = append([]byte(nil), raw...)
	return func(context.Context) ([]byte, error) { return raw, nil }
}

// discoveryDocumentURL turns a discovery base (usually the issuer) into the
// URL of its discovery document.
func discoveryDocumentURL(base string) string {
	if strings.HasSuffix(base, wellKnownOIDC) {
		return base
	}
	return strings.TrimSuffix(base, "/") + wellKnownOIDC
}

// checkFetchURL validates a configured http(s) URL.
func checkFetchURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%s %q: want an absolute http or https url", field, raw)
	}
	return nil
}
