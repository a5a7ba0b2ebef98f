"""A Starlette app wrapped with mangum, as deployed behind API Gateway."""

from mangum import Mangum
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def item(request):
    response = JSONResponse({
        "id": request.path_params["item_id"],
        "tags": request.query_params.getlist("tag"),
        "cookies": dict(request.cookies),
        "root_path": request.scope.get("root_path", ""),
    })
    response.set_cookie("seen", "yes", httponly=True)
    response.set_cookie("lang", "en")
    return response


async def upload(request):
    data = await request.body()
    return Response(data[::-1], media_type="application/octet-stream")


async def boom(request):
    raise RuntimeError("starlette handler failed")


app = Starlette(routes=[
    Route("/items/{item_id}", item),
    Route("/upload", upload, methods=["POST"]),
    Route("/boom", boom),
])
handler = Mangum(app, lifespan="off")
