package main

// The commands that talk to a running gateway: `edgegw admin token`,
// `edgegw status`, `edgegw reload` and `edgegw device`. On the box they use
// the root-only admin socket; from elsewhere --admin URL with a token.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
)

// adminFlags are the flags of every command that talks to a running
// gateway.
type adminFlags struct {
	socket, config, url, tokenFile, caFile *string
}

func addAdminFlags(fs *flag.FlagSet) adminFlags {
	return adminFlags{
		socket:    fs.String("socket", "", "the gateway's admin `socket` (admin.socket; default "+admin.DefaultSocket+"; root only)"),
		config:    fs.String("config", "", "take the socket from this configuration `file`'s admin.socket"),
		url:       fs.String("admin", "", "a remote admin listener's `URL` (https://GATEWAY:9100) instead of the socket; needs --token-file"),
		tokenFile: fs.String("token-file", "", "`file` holding an admin token (edgegw admin token create), for --admin"),
		caFile:    fs.String("ca-file", "", "`file` of CA certificates (PEM) that sign the remote listener's certificate, for --admin"),
	}
}

// client makes the admin client the flags describe; a contradiction
// among them is a usage error, said on stderr under cmd's name.
func (f adminFlags) client(cmd string, stderr io.Writer) (*admin.Client, error) {
	usage := func(err error) error {
		fmt.Fprintf(stderr, "edgegw %s: %v\n", cmd, err)
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	sock := *f.socket
	if *f.config != "" {
		if sock != "" || *f.url != "" {
			return nil, usage(errors.New("--config names the socket: give no --socket or --admin with it"))
		}
		cfg, err := config.Load(*f.config, config.Options{SkipFiles: true})
		if err != nil {
			return nil, err
		}
		sock = cfg.Admin.Socket
	}
	c, err := admin.NewClient(admin.ClientOptions{Socket: sock, URL: *f.url, TokenFile: *f.tokenFile, CAFile: *f.caFile})
	if err != nil {
		return nil, usage(err)
	}
	return c, nil
}

// call runs one request with a 30 s deadline (a reload can take a while).
func call(c *admin.Client, method, path string, in any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.Do(ctx, method, path, in)
}

const adminSynopsis = `edgegw admin token create NAME --role admin|viewer | token list | token revoke NAME [--socket PATH | --admin URL --token-file FILE [--ca-file FILE]]`

func cmdAdmin(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("admin", adminSynopsis, stderr)
	role := fs.String("role", "", "the new token's `role`: admin (everything) or viewer (read only)")
	asJSON := fs.Bool("json", false, "print the admin API's JSON")
	af := addAdminFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 || pos[0] != "token" {
		fs.Usage()
		return errUsage
	}
	var method, path string
	var body any
	switch {
	case pos[1] == "create" && len(pos) == 3:
		if !admin.Role(*role).Valid() {
			fmt.Fprintln(stderr, "edgegw admin token create: --role admin or --role viewer is required")
			return errUsage
		}
		method, path, body = http.MethodPost, admin.PathTokens, admin.CreateTokenRequest{Name: pos[2], Role: admin.Role(*role)}
	case pos[1] == "list" && len(pos) == 2:
		method, path = http.MethodGet, admin.PathTokens
	case pos[1] == "revoke" && len(pos) == 3:
		method, path = http.MethodPost, admin.PathTokens+"/"+url.PathEscape(pos[2])+"/revoke"
	default:
		fs.Usage()
		return errUsage
	}
	if *role != "" && pos[1] != "create" {
		fmt.Fprintln(stderr, "edgegw admin token: --role is for create")
		return errUsage
	}
	c, err := af.client("admin", stderr)
	if err != nil {
		return err
	}
	out, err := call(c, method, path, body)
	if err != nil {
		return fmt.Errorf("admin token %s: %w", pos[1], err)
	}
	if *asJSON {
		_, err := stdout.Write(out)
		return err
	}
	switch pos[1] {
	case "create":
		var t admin.CreatedToken
		if err := json.Unmarshal(out, &t); err != nil {
			return fmt.Errorf("admin token create: the answer is not a token: %w", err)
		}
		// The token alone on stdout, so that it can go straight to a file;
		// the advice on stderr.
		fmt.Fprintln(stdout, t.Secret)
		fmt.Fprintf(stderr, "Created %s token %q. It is shown only this once: the gateway keeps only its hash.\n", t.Role, t.Name)
		fmt.Fprintln(stderr, "Use it as Authorization: Bearer TOKEN, or with --admin URL --token-file FILE.")
		return nil
	case "list":
		var ts []admin.Token
		if err := json.Unmarshal(out, &ts); err != nil {
			return fmt.Errorf("admin token list: the answer is not a token list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tCREATED BY\tLAST USED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, stamp(t.Created), orDash(t.CreatedBy), stamp(t.LastUsed))
		}
		return tw.Flush()
	default:
		fmt.Fprintf(stdout, "Revoked token %q: it fails from now on.\n", pos[2])
		return nil
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

const statusSynopsis = "edgegw status [--socket PATH | --admin URL --token-file FILE [--ca-file FILE]]"

// cmdStatus prints the running gateway's status JSON.
var cmdStatus = viewCommand[struct{}]("status", statusSynopsis, admin.PathStatus, "", nil)

// viewCommand makes a read-only command over one admin API path. With a
// print function it decodes the answer as T and prints that (tables), or
// the JSON as it came with --json; without one it always prints the JSON.
// what names T in the error for an answer that does not decode.
func viewCommand[T any](name, synopsis, path, what string, print func(io.Writer, T) error) func(args []string, stdout, stderr io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		fs := newFlags(name, synopsis, stderr)
		af := addAdminFlags(fs)
		asJSON := new(bool)
		if print != nil {
			asJSON = fs.Bool("json", false, "print the admin API's JSON")
		}
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			fs.Usage()
			return errUsage
		}
		c, err := af.client(name, stderr)
		if err != nil {
			return err
		}
		out, err := call(c, http.MethodGet, path, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if print == nil || *asJSON {
			_, err := stdout.Write(out)
			return err
		}
		var v T
		if err := json.Unmarshal(out, &v); err != nil {
			return fmt.Errorf("%s: the answer is not %s: %w", name, what, err)
		}
		return print(stdout, v)
	}
}

const reloadSynopsis = "edgegw reload [--socket PATH | --admin URL --token-file FILE [--ca-file FILE]]"

// cmdReload asks the running gateway to reload its file and says how it
// went (SIGHUP does the same, without the answer).
func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", reloadSynopsis, stderr)
	af := addAdminFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fs.Usage()
		return errUsage
	}
	c, err := af.client("reload", stderr)
	if err != nil {
		return err
	}
	out, err := call(c, http.MethodPost, admin.PathReload, nil)
	if err != nil {
		var r admin.ReloadResult
		if json.Unmarshal(out, &r) == nil && r.Error != "" {
			return fmt.Errorf("reload rejected; the previous configuration keeps running:\n%s", r.Error)
		}
		return fmt.Errorf("reload: %w", err)
	}
	fmt.Fprintln(stdout, "Reloaded.")
	return nil
}
