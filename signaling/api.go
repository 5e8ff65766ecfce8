package signaling

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/webrtc/v4"
)

// APIOptions configures NewAPI. Zero fields mean the defaults each names.
type APIOptions struct {
	// UDPMux, if set, carries every PeerConnection of the API over the
	// sockets it owns (one UDP port; see ListenUDP). The caller closes it
	// after the last PeerConnection. Default: pion opens one ephemeral UDP
	// socket per candidate and PeerConnection.
	UDPMux ice.UDPMux
	// NAT1To1IPs are the public addresses of a host behind a 1:1 NAT: they
	// replace the host candidates' private addresses in the SDP.
	NAT1To1IPs []string
	// AllowRemoteIP filters remote candidates (signalled, trickled and
	// peer-reflexive): the agent never sends a packet to an address it
	// rejects. Default: every address.
	AllowRemoteIP func(net.IP) bool
	// AllowLocalIP filters the local addresses candidates are gathered on.
	// Default: every address of every interface except loopback.
	AllowLocalIP func(net.IP) bool
	// IncludeLoopback gathers candidates on loopback addresses too.
	IncludeLoopback bool
	// DisconnectedTimeout is how long ICE may hear nothing from the peer
	// before the connection counts as disconnected; FailedTimeout is how
	// much longer before it counts as failed; KeepAlive is how often ICE
	// sends a keepalive when nothing else flows. Defaults 5 s, 10 s, 1 s,
	// so a silent peer is failed 15 s after its last packet.
	DisconnectedTimeout, FailedTimeout, KeepAlive time.Duration
	// MaxMessageBytes is the largest DataChannel message this side accepts,
	// as advertised in the SDP (a=max-message-size). Default 256 KiB.
	MaxMessageBytes int
	// LoggerFactory receives pion's logs. Default: pion's (errors only, to
	// stderr).
	LoggerFactory logging.LoggerFactory
}

// Default ICE timeouts (see APIOptions).
const (
	DefaultDisconnectedTimeout = 5 * time.Second
	DefaultFailedTimeout       = 10 * time.Second
	DefaultKeepAlive           = time.Second
)

// NewAPI returns a pion API with roomwire's settings: DataChannels detached
// (read and written as io.ReadWriteClosers by their owners' goroutines, not
// in pion callbacks), multicast DNS off (no .local candidates, no mDNS
// socket), IPv4 and IPv6 UDP only, and the filters and timeouts of opts. One
// API serves any number of PeerConnections; create one per server or
// client, not one per connection.
func NewAPI(opts *APIOptions) (*webrtc.API, error) {
	var o APIOptions
	if opts != nil {
		o = *opts
	}
	if o.DisconnectedTimeout <= 0 {
		o.DisconnectedTimeout = DefaultDisconnectedTimeout
	}
	if o.FailedTimeout <= 0 {
		o.FailedTimeout = DefaultFailedTimeout
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 256 << 10
	}
	var se webrtc.SettingEngine
	se.DetachDataChannels()
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetICETimeouts(o.DisconnectedTimeout, o.FailedTimeout, o.KeepAlive)
	se.SetSCTPMaxMessageSize(uint32(o.MaxMessageBytes))
	se.SetIncludeLoopbackCandidate(o.IncludeLoopback)
	if o.AllowRemoteIP != nil {
		se.SetRemoteIPFilter(o.AllowRemoteIP)
	}
	if o.AllowLocalIP != nil {
		se.SetIPFilter(o.AllowLocalIP)
	}
	if len(o.NAT1To1IPs) > 0 {
		for _, ip := range o.NAT1To1IPs {
			if net.ParseIP(ip) == nil {
				return nil, fmt.Errorf("signaling: NAT 1:1 address %q is not an IP address", ip)
			}
		}
		se.SetNAT1To1IPs(o.NAT1To1IPs, webrtc.ICECandidateTypeHost) //nolint:staticcheck // the documented 1:1 NAT switch
	}
	if o.UDPMux != nil {
		se.SetICEUDPMux(o.UDPMux)
	}
	if o.LoggerFactory != nil {
		se.LoggerFactory = o.LoggerFactory
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se)), nil
}

// UDPReadBuffer is the receive buffer ListenUDP asks the kernel for. With
// the kernel's usual default (about 200 KiB) DataChannel throughput
// collapses under load: SCTP bursts overflow the socket.
const UDPReadBuffer = 4 << 20

// ListenUDP opens the one UDP socket (or, for an unspecified IP, one per
// interface address, all on the same port) that an ICE UDP mux carries
// every PeerConnection over, with a UDPReadBuffer receive buffer. addr is
// "host:port"; port 0 picks a free port. A loopback IP needs
// APIOptions.IncludeLoopback. Close the mux when done.
func ListenUDP(addr string) (ice.UDPMux, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("signaling: UDP address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("signaling: UDP address %q: bad port", addr)
	}
	ip := net.ParseIP(host)
	if host != "" && ip == nil {
		return nil, fmt.Errorf("signaling: UDP address %q: the host must be an IP address", addr)
	}
	if ip == nil || ip.IsUnspecified() {
		m, err := ice.NewMultiUDPMuxFromPort(port, ice.UDPMuxFromPortWithReadBufferSize(UDPReadBuffer))
		if err != nil {
			return nil, fmt.Errorf("signaling: listening on UDP port %d: %w", port, err)
		}
		return m, nil
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, fmt.Errorf("signaling: %w", err)
	}
	conn.SetReadBuffer(UDPReadBuffer) // best effort: the kernel caps it at rmem_max
	return ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn, Logger: logging.NewDefaultLoggerFactory().NewLogger("ice")}), nil
}

// PublicOnly reports whether ip is a public unicast address: not loopback,
// private (RFC 1918, RFC 4193), link-local, shared (RFC 6598, carrier-grade
// NAT), unspecified, multicast or otherwise reserved. It is the default
// remote-candidate filter of a server peer, so that a client cannot make
// the server send packets to hosts on the server's own networks.
func PublicOnly(ip net.IP) bool {
	if ip == nil || !ip.IsGlobalUnicast() || ip.IsPrivate() || ip.IsLoopback() ||
		ip.IsLinkLocalUnicast() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	if ip4 := ip.To4(); ip4 != nil {
		switch {
		case ip4[0] == 0, // "this network"
			ip4[0] == 100 && ip4[1]&0xc0 == 64,          // 100.64.0.0/10 shared address space
			ip4[0] == 192 && ip4[1] == 0 && ip4[2] == 0, // 192.0.0.0/24 protocol assignments
			ip4[0] == 198 && ip4[1]&0xfe == 18,          // 198.18.0.0/15 benchmarking
			ip4[0] >= 240:                               // reserved, broadcast
			return false
		}
		return true
	}
	// IPv6: 64:ff9b::/96 NAT64 can reach private IPv4 space; refuse it.
	if ip[0] == 0x00 && ip[1] == 0x64 && ip[2] == 0xff && ip[3] == 0x9b {
		return false
	}
	return true
}

// LoopbackOnly reports whether ip is a loopback address. Tests and
// single-host setups use it as both local and remote filter.
func LoopbackOnly(ip net.IP) bool { return ip.IsLoopback() }
