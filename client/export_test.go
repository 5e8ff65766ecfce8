package client

import "context"

// SetSSeqTrace makes c call f with the session seq of every durable
// message it receives from then on, and whether it was a duplicate (and
// so ignored). f runs with the client's lock held: it must not call c.
func SetSSeqTrace(c *Client, f func(sseq uint64, dup bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.traceSSeq = f
}

// WaitWriterIdle waits until c's writer has nothing under way and nothing
// withheld (an ack waiting to be batched), so that a test can stop the
// network between two writes.
func WaitWriterIdle(ctx context.Context, c *Client) error {
	for {
		c.mu.Lock()
		busy := c.sending || c.lastSSeq > c.ackedSSeq || len(c.sendq) > 0
		ch := c.sent
		c.mu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
