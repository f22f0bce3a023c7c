package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/storage"
)

// certsCmd is `monitorctl certs`: a small private PKI for a cluster
// (docs/deployment.md "TLS"). It writes, into -out:
//
//	ca.pem, ca-key.pem                 the CA (reused when both exist)
//	server.pem, server-key.pem         brokers and visualization server (-hosts
//	                                   as SANs; server and client usage, so
//	                                   brokers dial each other and Raft with it)
//	agent-<id>.pem, agent-<id>-key.pem one per -agents id: CN=<id> and URI
//	                                   SAN monitor://host/<id> (the broker's
//	                                   auth.cert_identity uri or cn)
//	client-<name>.pem, -key.pem        one per -clients name (e.g. prometheus,
//	                                   admin): CN=<name>, no host identity
//
// Keys are ECDSA P-256, every file mode 0600. No existing file is
// overwritten: the command checks every target first and writes nothing
// when one exists.
func certsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory to write the PEM files into (created 0700 when missing)")
	hosts := fs.String("hosts", "", "comma-separated DNS names and IP addresses of the brokers and visualization server: issue server.pem with them as SANs")
	agents := fs.String("agents", "", "comma-separated agent host ids: issue agent-<id>.pem for each")
	clients := fs.String("clients", "", "comma-separated names of other clients (prometheus, admin, ...): issue client-<name>.pem for each")
	days := fs.Int("days", 365, "validity of the issued certificates, in days (1 … 3650)")
	caDays := fs.Int("ca-days", 3650, "validity of a new CA, in days (1 … 36500)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: monitorctl certs -out DIR [-hosts H1,IP,...] [-agents ID,...] [-clients NAME,...] [-days N] [-ca-days N]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	req := certRequest{dir: *out, hosts: config.SplitList(*hosts), agents: config.SplitList(*agents),
		clients: config.SplitList(*clients), validity: time.Duration(*days) * 24 * time.Hour, caValidity: time.Duration(*caDays) * 24 * time.Hour}
	if err := req.check(fs.NArg(), *days, *caDays); err != nil {
		fmt.Fprintln(stderr, "monitorctl certs:", err)
		return 2
	}
	written, err := req.issue()
	if err != nil {
		fmt.Fprintln(stderr, "monitorctl certs:", err)
		return 1
	}
	for _, f := range written {
		fmt.Fprintln(stdout, f)
	}
	return 0
}

type certRequest struct {
	dir                  string
	hosts, agents        []string
	clients              []string
	validity, caValidity time.Duration
}

func (r certRequest) check(nargs, days, caDays int) error {
	switch {
	case nargs != 0:
		return errors.New("takes no positional arguments; use -out, -hosts, -agents, -clients")
	case r.dir == "":
		return errors.New("-out is required: the directory for the PEM files")
	case len(r.hosts)+len(r.agents)+len(r.clients) == 0:
		return errors.New("nothing to issue: give -hosts (a server certificate), -agents or -clients")
	case days < 1 || days > 3650:
		return fmt.Errorf("-days %d is out of range 1 … 3650", days)
	case caDays < 1 || caDays > 36500:
		return fmt.Errorf("-ca-days %d is out of range 1 … 36500", caDays)
	}
	for _, h := range r.hosts {
		if net.ParseIP(h) == nil && !validDNSName(h) {
			return fmt.Errorf("-hosts: %q is neither an IP address nor a DNS name", h)
		}
	}
	seen := map[string]bool{}
	for _, id := range r.agents {
		if err := storage.ValidateHostID(id); err != nil {
			return fmt.Errorf("-agents: %w", err)
		}
		if !safeFileName(id) {
			return fmt.Errorf("-agents: %q cannot name a file (use letters, digits, '.', '_', '-')", id)
		}
		if seen["agent-"+id] {
			return fmt.Errorf("-agents: %q is listed twice", id)
		}
		seen["agent-"+id] = true
	}
	for _, n := range r.clients {
		if !safeFileName(n) {
			return fmt.Errorf("-clients: %q is not a name of letters, digits, '.', '_', '-'", n)
		}
		if seen["client-"+n] {
			return fmt.Errorf("-clients: %q is listed twice", n)
		}
		seen["client-"+n] = true
	}
	return nil
}

func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimPrefix(s, "*."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func safeFileName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// leaf is one certificate to issue and where it goes.
type leaf struct {
	tmpl              *x509.Certificate
	certFile, keyFile string
}

// issue writes the files; it returns their paths in writing order.
func (r certRequest) issue() ([]string, error) {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", r.dir, err)
	}
	path := func(name string) string { return filepath.Join(r.dir, name) }
	caFile, caKeyFile := path("ca.pem"), path("ca-key.pem")

	var leaves []leaf
	if len(r.hosts) > 0 {
		t := &x509.Certificate{
			Subject:     pkix.Name{CommonName: r.hosts[0]},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		for _, h := range r.hosts {
			if ip := net.ParseIP(h); ip != nil {
				t.IPAddresses = append(t.IPAddresses, ip)
			} else {
				t.DNSNames = append(t.DNSNames, h)
			}
		}
		leaves = append(leaves, leaf{t, path("server.pem"), path("server-key.pem")})
	}
	for _, id := range r.agents {
		t := &x509.Certificate{
			Subject:     pkix.Name{CommonName: id},
			URIs:        []*url.URL{{Scheme: "monitor", Host: "host", Path: "/" + id}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		leaves = append(leaves, leaf{t, path("agent-" + id + ".pem"), path("agent-" + id + "-key.pem")})
	}
	for _, n := range r.clients {
		t := &x509.Certificate{
			Subject:     pkix.Name{CommonName: n},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		leaves = append(leaves, leaf{t, path("client-" + n + ".pem"), path("client-" + n + "-key.pem")})
	}

	// The CA: reused when both files are there, made when neither is.
	caExists, err := exists(caFile)
	if err != nil {
		return nil, err
	}
	caKeyExists, err := exists(caKeyFile)
	if err != nil {
		return nil, err
	}
	if caExists != caKeyExists {
		return nil, fmt.Errorf("%s and %s must both exist (reuse the CA) or neither (make one); found only one", caFile, caKeyFile)
	}
	// Nothing is written when any target exists.
	for _, l := range leaves {
		for _, f := range []string{l.certFile, l.keyFile} {
			if ok, err := exists(f); err != nil {
				return nil, err
			} else if ok {
				return nil, fmt.Errorf("%s exists; refusing to overwrite it (remove it, or issue into another -out)", f)
			}
		}
	}

	var written []string
	var ca *x509.Certificate
	var caKey *ecdsa.PrivateKey
	if caExists {
		ca, caKey, err = loadCA(caFile, caKeyFile)
		if err != nil {
			return nil, err
		}
	} else {
		caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate the CA key: %w", err)
		}
		serial, err := randomSerial()
		if err != nil {
			return nil, err
		}
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: "monitor CA", Organization: []string{"monitor"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(r.caValidity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
		if err != nil {
			return nil, fmt.Errorf("create the CA: %w", err)
		}
		if ca, err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("parse the CA: %w", err)
		}
		if err := writeKey(caKeyFile, caKey); err != nil {
			return nil, err
		}
		if err := writeNew(caFile, "CERTIFICATE", der); err != nil {
			return nil, err
		}
		written = append(written, caFile, caKeyFile)
	}

	for _, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return written, fmt.Errorf("generate a key: %w", err)
		}
		serial, err := randomSerial()
		if err != nil {
			return written, err
		}
		now := time.Now()
		l.tmpl.SerialNumber = serial
		l.tmpl.NotBefore = now.Add(-time.Hour)
		l.tmpl.NotAfter = now.Add(r.validity)
		if l.tmpl.NotAfter.After(ca.NotAfter) {
			l.tmpl.NotAfter = ca.NotAfter
		}
		l.tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, l.tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return written, fmt.Errorf("issue %s: %w", l.certFile, err)
		}
		// Key first: a reader that sees the certificate finds its key.
		if err := writeKey(l.keyFile, key); err != nil {
			return written, err
		}
		if err := writeNew(l.certFile, "CERTIFICATE", der); err != nil {
			return written, err
		}
		written = append(written, l.certFile, l.keyFile)
	}
	return written, nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode the key of %s: %w", path, err)
	}
	return writeNew(path, "PRIVATE KEY", der)
}

// writeNew creates path (mode 0600), failing if it exists.
func writeNew(path, typ string, der []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func loadCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read the CA: %w", err)
	}
	block, _ := pem.Decode(cb)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", certFile)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", certFile, err)
	}
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read the CA key: %w", err)
	}
	block, _ = pem.Decode(kb)
	if block == nil {
		return nil, nil, fmt.Errorf("%s holds no PEM key", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		if k2, err2 := x509.ParseECPrivateKey(block.Bytes); err2 == nil {
			k, err = k2, nil
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", keyFile, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("%s is not the ECDSA key of %s", keyFile, certFile)
	}
	return ca, key, nil
}
