'use strict'
// Helpers shared by the vector generators in this folder.
//
// Every generator is a small program that prints one JSON document on stdout (see index.js,
// which runs them all and writes tests/vectors/<name>.json). They only use the packages pinned
// in ../package.json, resolved from ../node_modules.

const sodium = require('sodium-universal')
const c = require('compact-encoding')

const hex = (b) => Buffer.from(b).toString('hex')
const unhex = (s) => Buffer.from(s, 'hex')

// BLAKE2b-256 of msg, keyed when key is given (the hash of every hyperdht id and token).
function blake2b (msg, key, outLen = 32) {
  const out = Buffer.alloc(outLen)
  if (key) sodium.crypto_generichash(out, msg, key)
  else sodium.crypto_generichash(out, msg)
  return out
}

function ipv4 (host, port) {
  return c.encode(c.ipv4Address, { host, port })
}

// Replaces every source of randomness the JS packages reach from JavaScript with a stream
// derived from `label`, so the same program prints the same bytes on every run:
//   - sodium.randombytes_buf (token secrets, secret-stream counters, SecurePayload nonces ...)
//   - Math.random (dht-rpc tids, udx stream ids ...)
//   - crypto_secretstream_xchacha20poly1305_init_push, whose header libsodium draws in C: the
//     header comes from the stream and the state from init_pull, which builds exactly the
//     state init_push builds for that header.
function deterministic (label) {
  const key = blake2b(Buffer.from('hyperdht-rs vectors: ' + label))
  let counter = 0
  const block = () => {
    const n = Buffer.alloc(8)
    n.writeBigUInt64LE(BigInt(counter++))
    return blake2b(n, key, 64)
  }
  let pool = Buffer.alloc(0)
  const take = (n) => {
    while (pool.length < n) pool = Buffer.concat([pool, block()])
    const out = pool.subarray(0, n)
    pool = pool.subarray(n)
    return out
  }
  sodium.randombytes_buf = (buf) => { buf.set(take(buf.length)) }
  Math.random = () => take(4).readUInt32LE(0) / 0x100000000
  sodium.crypto_secretstream_xchacha20poly1305_init_push = (state, header, k) => {
    header.set(take(header.length))
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, k)
  }
}

// Prints `out` as the generator's result (two-space JSON, Buffers as hex).
function print (out) {
  const replacer = (k, v) => {
    if (v && v.type === 'Buffer' && Array.isArray(v.data)) return hex(v.data)
    if (v instanceof Uint8Array) return hex(v)
    return v
  }
  process.stdout.write(JSON.stringify(out, replacer, 2) + '\n')
}

// Runs an async main; any failure exits non-zero so index.js notices.
function run (main) {
  main().then(
    (out) => { print(out); process.exit(0) },
    (err) => { console.error(err); process.exit(1) }
  )
}

function check (ok, what) {
  if (!ok) throw new Error('check failed: ' + what)
}

module.exports = { hex, unhex, blake2b, ipv4, deterministic, print, run, check }
