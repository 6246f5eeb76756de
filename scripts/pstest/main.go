// Command pstest serves Google's in-memory Pub/Sub fake (the real gRPC API) on one address until
// it gets SIGINT or SIGTERM. Topics and subscriptions live only as long as the process.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	address := flag.String("address", "127.0.0.1:8085", "host:port to serve the Pub/Sub API on")
	flag.Parse()
	server := pstest.NewServerWithAddress(*address)
	log.Printf("pstest serving Pub/Sub on %s", server.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	if err := server.Close(); err != nil {
		log.Fatalf("pstest close: %v", err)
	}
}
