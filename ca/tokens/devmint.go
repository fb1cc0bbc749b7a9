package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// DevClaims says what a DEVELOPMENT-ONLY token minted by DevIssuer.Mint
// claims.
type DevClaims struct {
	// Namespace and ServiceAccount name the service account. Required.
	Namespace      string
	ServiceAccount string
	// ServiceAccountUID defaults to a UID derived from namespace and name,
	// the same on every call.
	ServiceAccountUID string
	// Audiences are the token's audiences (aud, always a list). Required.
	Audiences []string
	// TTL is the token's lifetime. Default 1h.
	TTL time.Duration
	// PodName binds the token to a pod; PodUID defaults to a UID derived
	// from namespace and pod name.
	PodName string
	PodUID  string
	// NodeName adds the node claim; NodeUID defaults to a UID derived from
	// the node name.
	NodeName string
	NodeUID  string
	// Now is the issue time (iat, nbf). Default time.Now().
	Now time.Time
}

// devTokenClaims is the payload of a projected token, fields in the order
// Kubernetes serializes them.
type devTokenClaims struct {
	Audience   []string `json:"aud"`
	Expiry     int64    `json:"exp"`
	IssuedAt   int64    `json:"iat"`
	Issuer     string   `json:"iss"`
	ID         string   `json:"jti"`
	Kubernetes k8sClaim `json:"kubernetes.io"`
	NotBefore  int64    `json:"nbf"`
	Subject    string   `json:"sub"`
}

// Mint returns a DEVELOPMENT-ONLY token in the exact format of a
// Kubernetes projected service-account token: RS256, kid set, no typ
// header; claims aud (list), exp, iat, iss, jti, kubernetes.io
// {namespace, node, pod, serviceaccount}, nbf and sub.
func (d *DevIssuer) Mint(c DevClaims) (string, error) {
	if err := c.fill(); err != nil {
		return "", fmt.Errorf("mint dev token: %w", err)
	}
	jti, err := randomUUID()
	if err != nil {
		return "", fmt.Errorf("mint dev token: %w", err)
	}
	claims := devTokenClaims{
		Audience:  c.Audiences,
		Expiry:    c.Now.Add(c.TTL).Unix(),
		IssuedAt:  c.Now.Unix(),
		Issuer:    d.issuer,
		ID:        jti,
		NotBefore: c.Now.Unix(),
		Subject:   serviceAccountUsername(c.Namespace, c.ServiceAccount),
		Kubernetes: k8sClaim{
			Namespace:      c.Namespace,
			ServiceAccount: &k8sRef{Name: c.ServiceAccount, UID: c.ServiceAccountUID},
		},
	}
	if c.PodName != "" {
		claims.Kubernetes.Pod = &k8sRef{Name: c.PodName, UID: c.PodUID}
	}
	if c.NodeName != "" {
		claims.Kubernetes.Node = &k8sRef{Name: c.NodeName, UID: c.NodeUID}
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("mint dev token: %w", err)
	}
	jws, err := d.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("mint dev token: sign: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("mint dev token: serialize: %w", err)
	}
	return tok, nil
}

// fill validates the claims and fills their defaults.
func (c *DevClaims) fill() error {
	if err := validNamespace(c.Namespace); err != nil {
		return err
	}
	if err := validObjectName(c.ServiceAccount); err != nil {
		return fmt.Errorf("service account %w", err)
	}
	if len(c.Audiences) == 0 {
		return errors.New("no audience")
	}
	for _, a := range c.Audiences {
		if a == "" {
			return errors.New("empty audience")
		}
	}
	c.Audiences = append([]string(nil), c.Audiences...)
	switch {
	case c.TTL < 0:
		return fmt.Errorf("negative ttl %s", c.TTL)
	case c.TTL == 0:
		c.TTL = DefaultDevTokenTTL
	}
	if c.Now.IsZero() {
		c.Now = time.Now()
	}
	if c.ServiceAccountUID == "" {
		c.ServiceAccountUID = devUID("serviceaccount", c.Namespace, c.ServiceAccount)
	}
	if c.PodUID != "" && c.PodName == "" {
		return errors.New("pod uid without pod name")
	}
	if c.PodName != "" && c.PodUID == "" {
		c.PodUID = devUID("pod", c.Namespace, c.PodName)
	}
	if c.NodeUID != "" && c.NodeName == "" {
		return errors.New("node uid without node name")
	}
	if c.NodeName != "" && c.NodeUID == "" {
		c.NodeUID = devUID("node", "", c.NodeName)
	}
	id := identity{
		namespace: c.Namespace, name: c.ServiceAccount, uid: c.ServiceAccountUID,
		podName: c.PodName, podUID: c.PodUID, nodeName: c.NodeName, nodeUID: c.NodeUID,
	}
	return id.check()
}

// devUID derives a stable UUID-formatted UID (version 8, RFC 9562) from an
// object's kind, namespace and name.
func devUID(kind, namespace, name string) string {
	sum := sha256.Sum256([]byte("lanyard-dev-uid\x00" + kind + "\x00" + namespace + "\x00" + name))
	return formatUUID(sum[:16], 0x80)
}

// randomUUID returns a random version 4 UUID.
func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random jti: %w", err)
	}
	return formatUUID(b[:], 0x40), nil
}

func formatUUID(b []byte, version byte) string {
	b[6] = b[6]&0x0f | version
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
