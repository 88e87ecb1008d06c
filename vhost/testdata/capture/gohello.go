// gohello writes the ClientHello Go's crypto/tls sends for server name
// argv[2] ("" for none) to argv[1]; with argv[3]=="ech" it offers ECH with a
// made-up config whose public name is "public.example.net".
package main

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"net"
	"os"
	"time"
)

func echConfigList() []byte {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	pub := k.PublicKey().Bytes()
	var c []byte
	c = append(c, 7)                             // config_id
	c = binary.BigEndian.AppendUint16(c, 0x0020) // DHKEM(X25519, HKDF-SHA256)
	c = binary.BigEndian.AppendUint16(c, uint16(len(pub)))
	c = append(c, pub...)
	c = binary.BigEndian.AppendUint16(c, 4)
	c = binary.BigEndian.AppendUint16(c, 0x0001) // HKDF-SHA256
	c = binary.BigEndian.AppendUint16(c, 0x0001) // AES-128-GCM
	c = append(c, 0)                             // maximum_name_length
	name := "public.example.net"
	c = append(c, byte(len(name)))
	c = append(c, name...)
	c = binary.BigEndian.AppendUint16(c, 0) // extensions
	var cfg []byte
	cfg = binary.BigEndian.AppendUint16(cfg, 0xfe0d)
	cfg = binary.BigEndian.AppendUint16(cfg, uint16(len(c)))
	cfg = append(cfg, c...)
	var list []byte
	list = binary.BigEndian.AppendUint16(list, uint16(len(cfg)))
	return append(list, cfg...)
}

func main() {
	cli, srv := net.Pipe()
	conf := &tls.Config{ServerName: os.Args[2], InsecureSkipVerify: true}
	if len(os.Args) > 3 && os.Args[3] == "ech" {
		conf.EncryptedClientHelloConfigList = echConfigList()
		conf.MinVersion = tls.VersionTLS13
	}
	go func() {
		tls.Client(cli, conf).Handshake()
	}()
	var got []byte
	buf := make([]byte, 65536)
	for {
		srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := srv.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if err := os.WriteFile(os.Args[1], got, 0o644); err != nil {
		panic(err)
	}
}
