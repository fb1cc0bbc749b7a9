package sdstest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// Config configures a Client.
type Config struct {
	// Names is the first subscription (resource_names); empty asks for
	// everything the caller has.
	Names []string
	// Node is sent in every request. Default: id and cluster "sdstest",
	// user agent "envoy".
	Node *corev3.Node
	// Token, when set, is sent as "authorization: Bearer <Token>" on each
	// stream, as Envoy's file-based call credentials do.
	Token string
	// Reconnect, when positive, reopens a failed stream after that delay,
	// as Envoy does. Zero stops the client at the first stream failure.
	Reconnect time.Duration
	// Buffer is the capacity of the Responses channel. Default 64.
	Buffer int
}

// Response is one DiscoveryResponse as the client saw it.
type Response struct {
	Version string
	Nonce   string
	// Secrets in response order.
	Secrets []*tlsv3.Secret
	// NACK is the reason the client rejected it; nil when ACKed.
	NACK error
	Raw  *discoveryv3.DiscoveryResponse
}

// Secret returns the named secret, or nil.
func (r *Response) Secret(name string) *tlsv3.Secret {
	for _, s := range r.Secrets {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

// Names lists the secrets' names in response order.
func (r *Response) Names() []string {
	names := make([]string, len(r.Secrets))
	for i, s := range r.Secrets {
		names[i] = s.GetName()
	}
	return names
}

// Client is an SDS StreamSecrets client. It sends a first request with
// node and resource_names, then answers each response as Envoy does: an ACK
// echoes the response's version_info and nonce; a NACK (a response it
// cannot use, or one NACKNext asked for) keeps the last accepted version,
// echoes the nonce and sets error_detail. Responses are delivered on
// Responses after they are answered.
type Client struct {
	sds       secretv3.SecretDiscoveryServiceClient
	cfg       Config
	responses chan *Response
	done      chan struct{}
	stop      context.CancelFunc

	mu        sync.Mutex
	stream    grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	endStream context.CancelFunc // ends the current stream
	reconnect bool               // Reconnect asked for a new stream
	names     []string
	acked     string // version_info of the last accepted response
	nonce     string // nonce of the last response on this stream
	nackNext  string
	streams   int
	err       error
}

// Start opens a stream on conn and runs the client until ctx is done or
// Close is called.
func Start(ctx context.Context, conn grpc.ClientConnInterface, cfg Config) *Client {
	if cfg.Node == nil {
		cfg.Node = &corev3.Node{Id: "sdstest", Cluster: "sdstest", UserAgentName: "envoy"}
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 64
	}
	ctx, stop := context.WithCancel(ctx)
	c := &Client{
		sds:       secretv3.NewSecretDiscoveryServiceClient(conn),
		cfg:       cfg,
		responses: make(chan *Response, cfg.Buffer),
		done:      make(chan struct{}),
		stop:      stop,
		names:     slices.Clone(cfg.Names),
	}
	go c.run(ctx)
	return c
}

// Responses delivers every response received, in order. It is closed when
// the client stops.
func (c *Client) Responses() <-chan *Response { return c.responses }

// Done is closed when the client has stopped.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is the error that ended the last stream (nil while none has).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Streams is how many streams the client has opened.
func (c *Client) Streams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams
}

// Acked is the version of the last response the client accepted.
func (c *Client) Acked() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

// Close stops the client and waits for it.
func (c *Client) Close() {
	c.stop()
	<-c.done
}

// NACKNext makes the client reject the next response with msg.
func (c *Client) NACKNext(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nackNext = msg
}

// Subscribe changes the subscription on the live stream: a request with
// the new resource_names, the last accepted version and the last nonce.
// Between streams, the next stream's first request carries the names.
func (c *Client) Subscribe(names ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names = slices.Clone(names)
	if c.stream == nil {
		return nil
	}
	return c.sendLocked(c.request(c.nonce, nil))
}

// Send sends req as is on the current stream, for protocol tests (a stale
// nonce, say). Node and type_url are filled when empty.
func (c *Client) Send(req *discoveryv3.DiscoveryRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.Node == nil {
		req.Node = c.cfg.Node
	}
	if req.TypeUrl == "" {
		req.TypeUrl = resourcev3.SecretType
	}
	return c.sendLocked(req)
}

// Reconnect ends the current stream and opens a new one at once; its
// first request carries the last accepted version and no nonce.
func (c *Client) Reconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reconnect = true
	if c.endStream != nil {
		c.endStream()
	}
}

func (c *Client) run(ctx context.Context) {
	defer close(c.done)
	defer close(c.responses)
	for {
		err := c.session(ctx)
		c.mu.Lock()
		again := c.reconnect
		c.reconnect = false
		if !again {
			c.err = err
		}
		c.mu.Unlock()
		switch {
		case ctx.Err() != nil:
			return
		case again:
			continue
		case c.cfg.Reconnect <= 0:
			return
		}
		t := time.NewTimer(c.cfg.Reconnect)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session runs one stream until it fails.
func (c *Client) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.cfg.Token != "" {
		sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+c.cfg.Token)
	}
	stream, err := c.sds.StreamSecrets(sctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.stream, c.endStream, c.nonce = stream, cancel, ""
	c.streams++
	// A failed Send (io.EOF when the server has ended the stream) carries
	// no status; Recv reports the stream's real end.
	_ = c.sendLocked(c.request("", nil))
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.stream, c.endStream = nil, nil
		c.mu.Unlock()
	}()
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		r := c.answer(resp)
		select {
		case c.responses <- r:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// answer ACKs or NACKs resp and returns what the client saw.
func (c *Client) answer(resp *discoveryv3.DiscoveryResponse) *Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &Response{Version: resp.GetVersionInfo(), Nonce: resp.GetNonce(), Raw: resp}
	r.Secrets, r.NACK = Decode(resp)
	if r.NACK == nil {
		r.NACK = Validate(resp, r.Secrets)
	}
	if r.NACK == nil && c.nackNext != "" {
		r.NACK = errors.New(c.nackNext)
		c.nackNext = ""
	}
	c.nonce = resp.GetNonce()
	var detail *rpcstatus.Status
	if r.NACK != nil {
		detail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: r.NACK.Error()}
	} else {
		c.acked = resp.GetVersionInfo()
	}
	_ = c.sendLocked(c.request(c.nonce, detail)) // a broken stream shows in Recv
	return r
}

func (c *Client) request(nonce string, detail *rpcstatus.Status) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{
		VersionInfo:   c.acked,
		Node:          c.cfg.Node,
		ResourceNames: slices.Clone(c.names),
		TypeUrl:       resourcev3.SecretType,
		ResponseNonce: nonce,
		ErrorDetail:   detail,
	}
}

func (c *Client) sendLocked(req *discoveryv3.DiscoveryRequest) error {
	if c.stream == nil {
		return errors.New("sdstest: no stream")
	}
	return c.stream.Send(req)
}

// Decode unpacks the secrets of a response.
func Decode(resp *discoveryv3.DiscoveryResponse) ([]*tlsv3.Secret, error) {
	secrets := make([]*tlsv3.Secret, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		if r.GetTypeUrl() != resourcev3.SecretType {
			return nil, fmt.Errorf("resource type %q", r.GetTypeUrl())
		}
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			return nil, fmt.Errorf("decode secret: %w", err)
		}
		secrets = append(secrets, &s)
	}
	return secrets, nil
}

// Validate checks a streamed response as Envoy would before applying it:
// type_url, version and nonce set, named secrets, and no certificate
// without a chain or a key.
func Validate(resp *discoveryv3.DiscoveryResponse, secrets []*tlsv3.Secret) error {
	switch {
	case resp.GetTypeUrl() != resourcev3.SecretType:
		return fmt.Errorf("type_url %q", resp.GetTypeUrl())
	case resp.GetVersionInfo() == "":
		return errors.New("empty version_info")
	case resp.GetNonce() == "":
		return errors.New("empty nonce")
	case len(secrets) == 0:
		return errors.New("no secrets")
	}
	for _, s := range secrets {
		if s.GetName() == "" {
			return errors.New("secret without a name")
		}
		if s.GetTlsCertificate() == nil && s.GetValidationContext() == nil {
			return fmt.Errorf("secret %q: neither certificate nor validation context", s.GetName())
		}
		if tc := s.GetTlsCertificate(); tc != nil &&
			(len(tc.GetCertificateChain().GetInlineBytes()) == 0 || len(tc.GetPrivateKey().GetInlineBytes()) == 0) {
			return fmt.Errorf("secret %q: empty certificate", s.GetName())
		}
	}
	return nil
}
