// Package tlsconfig turns the `tls:` blocks of the components' YAML files
// into *tls.Config values for servers and clients: TLS 1.2 or newer, optional
// client certificates (mTLS), and certificates re-read from disk when their
// files change so that rotation needs no restart.
//
// A Config is a plain value; the *tls.Config values it returns are safe for
// concurrent use by any number of handshakes.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
)

// Client authentication modes of Config.ClientAuth.
const (
	ClientAuthNone    = "none"    // no client certificate asked for
	ClientAuthRequest = "request" // verified against ca_file when the client sends one
	ClientAuthRequire = "require" // mTLS: a client certificate signed by ca_file is required
)

// Config is one side's TLS settings as they appear in YAML under a `tls:` key.
type Config struct {
	Enabled            bool   `yaml:"enabled"`
	CertFile           string `yaml:"cert_file"`            // PEM; server: required when Enabled; client: for mTLS
	KeyFile            string `yaml:"key_file"`             // PEM private key of cert_file
	CAFile             string `yaml:"ca_file"`              // client: roots for the server (empty: system roots); server: roots for client certs
	ServerName         string `yaml:"server_name"`          // client only; empty: host dialed
	ClientAuth         string `yaml:"client_auth"`          // server only: "none" (default), "request", "require" (mTLS)
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"` // client only, tests
}

// Validate checks the block found at key (e.g. "grpc_tls"): the mode is
// known, cert_file and key_file come together and load as a pair, ca_file
// holds at least one certificate, and client_auth other than "none" has a
// ca_file. A disabled block is not checked beyond client_auth's spelling.
// Whether a certificate is required at all depends on the side: servers
// use ValidateServer.
func (c Config) Validate(key string) error {
	switch c.ClientAuth {
	case "", ClientAuthNone, ClientAuthRequest, ClientAuthRequire:
	default:
		return config.Errorf(key+".client_auth", "%q is not a mode; allowed none, request, require", c.ClientAuth)
	}
	if !c.Enabled {
		return nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		if c.CertFile == "" {
			return config.Errorf(key+".cert_file", "is empty but key_file is set; give both or neither")
		}
		return config.Errorf(key+".key_file", "is empty but cert_file is set; give both or neither")
	}
	if c.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			return config.Errorf(key+".cert_file", "cannot load the pair %s / %s: %v", c.CertFile, c.KeyFile, err)
		}
	}
	if c.CAFile != "" {
		if _, err := loadPool(c.CAFile); err != nil {
			return config.Errorf(key+".ca_file", "%v", err)
		}
	}
	if c.ClientAuth == ClientAuthRequest || c.ClientAuth == ClientAuthRequire {
		if c.CAFile == "" {
			return config.Errorf(key+".ca_file", "is empty but client_auth is %q; name the CA that signs client certificates", c.ClientAuth)
		}
	}
	return nil
}

// ValidateServer is Validate plus what a listening side needs: when
// enabled, a certificate and key.
func (c Config) ValidateServer(key string) error {
	if err := c.Validate(key); err != nil {
		return err
	}
	if c.Enabled && c.CertFile == "" {
		return config.Errorf(key+".cert_file", "is empty; a TLS server needs cert_file and key_file")
	}
	return nil
}

// Server returns the listening side's TLS config, or nil, nil when the block
// is disabled. The certificate is loaded now (an error if it does not) and
// re-read on a later handshake once cert_file or key_file has a new
// modification time; a failed re-read keeps serving the previous pair.
func (c Config) Server() (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("tls server: cert_file and key_file are required")
	}
	kp, err := newKeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.get()
		},
	}
	switch c.ClientAuth {
	case "", ClientAuthNone:
		tc.ClientAuth = tls.NoClientCert
	case ClientAuthRequest:
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("tls server: client_auth %q is not none, request or require", c.ClientAuth)
	}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls server: %w", err)
		}
		tc.ClientCAs = pool
	} else if tc.ClientAuth != tls.NoClientCert {
		return nil, fmt.Errorf("tls server: client_auth %q needs ca_file", c.ClientAuth)
	}
	return tc, nil
}

// Client returns the dialing side's TLS config, or nil, nil when the block
// is disabled. With cert_file and key_file set it presents that certificate
// (re-read when the files change, like Server).
func (c Config) Client() (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // opt-in, documented as tests only
	}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls client: %w", err)
		}
		tc.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tls client: cert_file and key_file come together")
	}
	if c.CertFile != "" {
		kp, err := newKeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, err
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return kp.get()
		}
	}
	return tc, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// recheckEvery bounds how often a handshake stats the certificate files.
const recheckEvery = time.Second

// keyPair is a certificate and key re-read from disk when either file's
// modification time or size changes.
type keyPair struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp fileStamp
	keyStamp  fileStamp
	checked   time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if err := kp.load(); err != nil {
		return nil, err
	}
	return kp, nil
}

func (kp *keyPair) load() error {
	cs, err := stamp(kp.certFile)
	if err != nil {
		return fmt.Errorf("tls: stat cert_file: %w", err)
	}
	ks, err := stamp(kp.keyFile)
	if err != nil {
		return fmt.Errorf("tls: stat key_file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load %s / %s: %w", kp.certFile, kp.keyFile, err)
	}
	kp.cert, kp.certStamp, kp.keyStamp, kp.checked = &cert, cs, ks, time.Now()
	return nil
}

// get returns the current pair, re-reading it first when the files changed.
// A pair that does not load (e.g. the cert written but not yet its key)
// leaves the previous one in use; the next check tries again.
func (kp *keyPair) get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if time.Since(kp.checked) < recheckEvery {
		return kp.cert, nil
	}
	kp.checked = time.Now()
	cs, err1 := stamp(kp.certFile)
	ks, err2 := stamp(kp.keyFile)
	if err1 != nil || err2 != nil || (cs == kp.certStamp && ks == kp.keyStamp) {
		return kp.cert, nil
	}
	_ = kp.load() // on error the previous pair stays; the stamps are unchanged so the next check retries
	return kp.cert, nil
}
