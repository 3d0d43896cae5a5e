"""The HTML pages (static HTML and JavaScript, no build step): the landing page `/` with the pages a token may
open, the agent console `/console`, the supervisors' wallboard of the calls in progress `/live`, the scored calls
`/calls`, `/calls/{call_id}`, the coaching scorecards `/agents`, `/agents/{agent_id}`, the review queue of disputed
prompts `/reviews`, and the loan book's customers `/customers`, `/customers/{customer_id}` and follow-up work queue
`/followups`; the API's own docs `/docs` with Swagger UI served from this process (a bank's network seldom reaches a
CDN). They call the JSON API with the token they were opened with; `GET /v1/me` tells them who that is, which pages
they may open and the bank's time zone they show times in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field
from swagger_ui_bundle import swagger_ui_path

from service.api.deps import Anyone, SettingsDep
from service.auth import Role

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: Swagger UI's JavaScript and CSS, from the swagger-ui-bundle package; mounted by the app at SWAGGER_URL.
SWAGGER_DIR = Path(swagger_ui_path)
SWAGGER_URL = "/static/swagger-ui"
router = APIRouter(tags=["pages"])


@dataclass(frozen=True, slots=True)
class PageLink:
    """A page of the navigation bar and the landing page, and the roles whose token may open it (admin: all)."""

    path: str
    title: str
    summary: str
    roles: tuple[Role, ...]


#: In the order of the navigation bar. What each role may open follows the API routes the page calls
#: (service/api/deps.py): an agent's pages show their own calls, customers and follow-ups only.
PAGES: tuple[PageLink, ...] = (
    PageLink("/console", "坐席控制台", "通话中的实时转写、追问提示和核对清单；没有接入话务系统时可回放演示通话。",
             ("agent", "supervisor")),
    PageLink("/live", "实时看板", "进行中的每通电话一张卡片，按实时风险排序；需要关注的回答即时提醒，点开只读查看。",
             ("supervisor",)),
    PageLink("/calls", "通话记录", "已评分的通话：按日期、风险等级、回答类型和坐席筛选，打开每通电话的报告。",
             ("agent", "supervisor")),
    PageLink("/customers", "客户", "按风险等级排列的客户，每位客户的等级变化、未说清的问题、历次通话和跟进。",
             ("agent", "supervisor")),
    PageLink("/followups", "跟进任务", "二次回访、短信、邮件和信函的工作队列：分配、登记结果、查看逾期。",
             ("agent", "supervisor")),
    PageLink("/agents", "坐席辅导", "每位坐席与团队中位数的比较、趋势和最值得复盘的通话。", ("supervisor",)),
    PageLink("/reviews", "提示复核", "坐席认为有误的提示：查看问答，维持或纠正评估结论，纠正后风险评分随之更新。",
             ("supervisor",)),
)
#: An agent's own scorecard, in place of the list of all agents that only supervisors may open.
OWN_SCORECARD = "我的辅导", "本人与团队中位数的比较、趋势和最值得复盘的通话。"
DOCS = PageLink("/docs", "接口文档", "每个接口的用途、参数和返回内容（供对接系统的技术人员查阅）。",
                ("ingest", "supervisor"))


class PageEntry(BaseModel):
    path: str
    title: str
    summary: str


class Me(BaseModel):
    """Who the token belongs to, what the pages show them and how they show times."""

    name: str
    role: Role
    agent_id: str | None
    timezone: str = Field(description="the bank's time zone (HUIFANG_LOANBOOK__TIMEZONE): pages show times in it")
    pages: list[PageEntry] = Field(description="the pages this token may open, in the navigation bar's order")
    docs: PageEntry | None = Field(description="the API's docs, for the roles that call the API")


def _may_open(role: Role, page: PageLink) -> bool:
    return role == "admin" or role in page.roles


def _entry(page: PageLink) -> PageEntry:
    return PageEntry(path=page.path, title=page.title, summary=page.summary)


@router.get("/v1/me")
async def me(principal: Anyone, settings: SettingsDep) -> Me:
    """The caller's name, role and agent id, the pages they may open and the bank's time zone."""
    pages = [_entry(p) for p in PAGES if _may_open(principal.role, p)]
    if principal.role == "agent" and principal.agent_id:
        title, summary = OWN_SCORECARD
        pages.append(PageEntry(path=f"/agents/{principal.agent_id}", title=title, summary=summary))
    docs_entry = _entry(DOCS) if _may_open(principal.role, DOCS) else None
    return Me(name=principal.name, role=principal.role, agent_id=principal.agent_id,
              timezone=settings.loanbook.timezone, pages=pages, docs=docs_entry)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8")


@router.get("/", include_in_schema=False)
async def landing() -> FileResponse:
    """The pages a token may open, with what each is for; asks for the token when the browser has none."""
    return _page("index.html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon")


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    """Swagger UI over /openapi.json, its script and style served from this process."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="回访 huifang · 接口文档",
                               swagger_js_url=f"{SWAGGER_URL}/swagger-ui-bundle.js",
                               swagger_css_url=f"{SWAGGER_URL}/swagger-ui.css",
                               swagger_favicon_url="/favicon.ico")


@router.get("/console", include_in_schema=False)
async def console() -> FileResponse:
    """The agent's view of one live call: `/console?call=ID` watches a call, `/console?demo=1` replays a
    sample call."""
    return _page("console.html")


@router.get("/live", include_in_schema=False)
async def live_page() -> FileResponse:
    """The wallboard: a tile per call in progress, sorted by live risk, alerts until acknowledged (supervisors)."""
    return _page("live.html")


@router.get("/calls", include_in_schema=False)
async def calls_page() -> FileResponse:
    """Scored calls: filters, risk tiers, links to each report."""
    return _page("calls.html")


@router.get("/calls/{call_id}", include_in_schema=False)
async def report_page(call_id: str) -> FileResponse:
    """One call's report: timeline, checklist, risk gauge and contributions, actions, playable spans."""
    return _page("report.html")


@router.get("/agents", include_in_schema=False)
async def agents_page() -> FileResponse:
    """Coaching scorecards: every agent against the team's median (supervisors)."""
    return _page("agents.html")


@router.get("/agents/{agent_id}", include_in_schema=False)
async def agent_page(agent_id: str) -> FileResponse:
    """One agent's scorecard: trends, coverage per topic, prompts followed, the moments to listen to."""
    return _page("agents.html")


@router.get("/reviews", include_in_schema=False)
async def reviews_page() -> FileResponse:
    """The review queue of disputed prompts (supervisors): question, answer, the assessor's label and prompt, the
    agent's reason; uphold or overturn with a label."""
    return _page("reviews.html")


@router.get("/customers", include_in_schema=False)
async def customers_page() -> FileResponse:
    """The loan book: customers by risk tier with their open follow-ups (an agent: their own customers)."""
    return _page("customers.html")


@router.get("/customers/{customer_id}", include_in_schema=False)
async def customer_page(customer_id: str) -> FileResponse:
    """One customer: tier over time, topics never answered clearly, contradicted figures, every follow-up call,
    follow-ups, messages and masked contact details."""
    return _page("customers.html")


@router.get("/followups", include_in_schema=False)
async def followups_page() -> FileResponse:
    """The follow-up work queue: filters, overdue items, assignment (supervisors) and outcomes."""
    return _page("followups.html")
