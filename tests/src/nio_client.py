import asyncio, sys, time
from nio import AsyncClient, LoginResponse, RoomCreateResponse, JoinResponse, \
    RoomSendResponse, SyncResponse, RoomMessageText

async def synced(client, since):
    r = await client.sync(timeout=2000, since=since)
    if not isinstance(r, SyncResponse):
        sys.exit(f"sync failed: {r}")
    return r

async def main():
    step, homeserver, user, password, room = sys.argv[1:6]
    client = AsyncClient(homeserver, user)
    r = await client.login(password)
    if not isinstance(r, LoginResponse):
        sys.exit(f"login of {user} at {homeserver} failed: {r}")
    deadline = time.monotonic() + float(sys.argv[7])
    try:
        if step == "invite":
            r = await client.room_create(name="meshsim", invite=[room])
            if not isinstance(r, RoomCreateResponse):
                sys.exit(f"room_create failed: {r}")
            print(r.room_id)
        elif step == "join":
            # meshsim's test users accept invites themselves (Synapse's auto_accept_invites):
            # the invite may show, or the room may be joined already.
            since = None
            while True:
                s = await synced(client, since)
                since = s.next_batch
                if room in s.rooms.join:
                    print("joined (the invite was accepted automatically)")
                    return
                if room in s.rooms.invite:
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"no invite to {room} arrived")
            r = await client.join(room)
            if not isinstance(r, JoinResponse):
                sys.exit(f"join failed: {r}")
            print("joined")
        elif step == "send":
            await synced(client, None)
            r = await client.room_send(room, "m.room.message",
                                       {"msgtype": "m.text", "body": sys.argv[6]})
            if not isinstance(r, RoomSendResponse):
                sys.exit(f"send failed: {r}")
            print(r.event_id)
        elif step == "await":
            since = None
            while True:
                s = await synced(client, since)
                since = s.next_batch
                joined = s.rooms.join.get(room)
                events = joined.timeline.events if joined else []
                if any(isinstance(e, RoomMessageText) and e.body == sys.argv[6]
                       for e in events):
                    print("received")
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"the message did not arrive in {room}")
        else:
            sys.exit(f"unknown step {step}")
    finally:
        await client.close()

asyncio.run(main())
