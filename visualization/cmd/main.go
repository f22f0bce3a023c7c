// Command visualization runs the visualization server: the HTTP JSON API,
// the WebSocket push channel and the status page over the brokers, behind
// JWT login. MONITOR_JWT_SECRET and MONITOR_CLUSTER_SECRET override the
// secrets of the file; the server refuses to start without a JWT secret of
// at least 32 bytes and at least one user (-check-config says so too).
//
//	visualization -config configs/visualization.yaml [-broker ADDR[,ADDR...]] [-http ADDR] [-quic ADDR] [-check-config] [-log-level LEVEL]
//
// -hash-password reads a password from the first line of stdin (never from
// the command line, where ps would show it) and prints its bcrypt hash for
// auth.users[].password_hash:
//
//	printf '%s\n' "$PASSWORD" | visualization -hash-password
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/visualization"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("visualization", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML config file (default: built-in defaults)")
	checkConfig := fs.Bool("check-config", false, "validate the configuration, print \"config ok\" and exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	hashPassword := fs.Bool("hash-password", false, "read a password from the first line of stdin, print its bcrypt hash for auth.users and exit")
	cfg := visualization.DefaultConfig()
	flags := config.NewFlags(fs)
	cfg.BindFlags(flags)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *hashPassword {
		return printHash()
	}
	if err := config.Load(*configPath, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.FromEnv(os.Getenv)
	if err := flags.Apply(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := cfg.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *checkConfig {
		fmt.Println("config ok")
		return 0
	}
	logger, err := config.Logger(*logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "flag -log-level: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := visualization.New(cfg, logger)
	if err != nil {
		logger.Error("start visualization server", "err", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		logger.Error("visualization server stopped", "err", err)
		return 1
	}
	return 0
}

// printHash prints the bcrypt hash of the password on stdin's first line.
func printHash() int {
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintf(os.Stderr, "-hash-password: read the password from stdin: %v\n", err)
		return 2
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		fmt.Fprintln(os.Stderr, "-hash-password: the password on stdin is empty")
		return 2
	}
	h, err := visualization.HashPassword(pw)
	if err != nil {
		fmt.Fprintf(os.Stderr, "-hash-password: %v\n", err)
		return 2
	}
	fmt.Println(h)
	return 0
}
