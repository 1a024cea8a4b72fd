// A Go HTTPS client for bpf-tests/tests/tls.rs: two requests over HTTP/1.1 on one kept-alive
// connection, then one over HTTP/2 (ALPN), all through crypto/tls, which Go links into the
// binary (no libssl). Usage: go_tls_client https://host:port
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	base := os.Args[1]
	// The agent reads new processes' executables every second: be hooked before the first call.
	time.Sleep(2 * time.Second)
	insecure := &tls.Config{InsecureSkipVerify: true}
	h1 := &http.Client{Transport: &http.Transport{
		TLSClientConfig: insecure,
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure, ForceAttemptHTTP2: true}}
	for i, c := range []*http.Client{h1, h1, h2} {
		resp, err := c.Get(fmt.Sprintf("%s/ack/go-%d", base, i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(resp.Proto, resp.StatusCode)
	}
}
