#!/usr/bin/env python3
"""Many long SSE streams at once, for bench/memory.sh.

    sse_streams.py upstream PORT EVENTS INTERVAL
        An MCP upstream answering every POST with a text/event-stream of
        EVENTS progress notifications, one every INTERVAL seconds, then the
        JSON-RPC result (asyncio, so thousands of streams cost little).
    sse_streams.py clients URL TOKEN COUNT EVENTS
        Opens COUNT connections to URL at once, each POSTing a tools/call
        with TOKEN, reads its whole stream and checks it: a 200, exactly
        EVENTS progress events in order, then the result. Prints
        `streams=N ok=N failed=N` and exits 1 unless every stream was ok.
"""
import asyncio
import json
import sys
import urllib.parse

CALL = json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
    "params": {"name": "add", "arguments": {"a": 1, "b": 2}, "_meta": {"progressToken": "p"}},
}).encode()


def event(message):
    return b"data: " + json.dumps(message).encode() + b"\n\n"


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve_stream(reader, writer, events, interval):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(events):
                await asyncio.sleep(interval)
                progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": "p", "progress": i + 1}}
                writer.write(chunk(event(progress)))
                await writer.drain()
            result = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "3"}]}}
            writer.write(chunk(event(result)) + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def upstream(port, events, interval):
    server = await asyncio.start_server(
        lambda r, w: serve_stream(r, w, events, interval), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


async def one_client(url, token, events):
    u = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        writer.write(
            f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n"
            f"Mcp-Method: tools/call\r\nMcp-Name: add\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(CALL)}\r\n\r\n".encode() + CALL)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return False
        body = b""
        while True:   # chunked body up to its last chunk
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        messages = [json.loads(e[len("data: "):]) for e in body.decode().split("\n\n") if e.startswith("data: ")]
        progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
        return progress == list(range(1, events + 1)) and messages[-1].get("result") is not None
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError):
        return False
    finally:
        writer.close()


async def clients(url, token, count, events):
    results = await asyncio.gather(*(one_client(url, token, events) for _ in range(count)))
    ok = sum(results)
    print(f"streams={count} ok={ok} failed={count - ok}", flush=True)
    return ok == count


def main():
    mode = sys.argv[1]
    if mode == "upstream":
        asyncio.run(upstream(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    elif mode == "clients":
        ok = asyncio.run(clients(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
        sys.exit(0 if ok else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
